//! Tenants root acts on behalf of: a Kubernetes namespace, for the agent's namespaced
//! `BpfApplication`s. Only a root caller may ask; the request is then decided, counted and
//! owned as the namespace's (its own tenant uid, `TENANT_UID_BASE + id`, kept in the store),
//! so the namespace gets exactly what policy rules naming it (`kubernetes_namespaces`) grant:
//! program types, interfaces, priority range, quotas, and only its own programs and links.

use super::*;
use crate::model::{TENANT_UID_BASE, is_tenant_uid};

/// The longest Kubernetes namespace name (an RFC 1123 label).
const MAX_NAMESPACE: usize = 63;

/// Checks a Kubernetes namespace name: an RFC 1123 label.
pub fn check_namespace(ns: &str) -> Result<()> {
    let ok = !ns.is_empty()
        && ns.len() <= MAX_NAMESPACE
        && ns
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !ns.starts_with('-')
        && !ns.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "'{}' is not a Kubernetes namespace name (lowercase letters, digits and '-', at most 63)",
            truncate(ns, 80)
        )))
    }
}

impl Manager {
    /// The caller acting for Kubernetes namespace `ns`: refused unless `real` is root.
    pub fn on_behalf_of_namespace(&self, real: Caller, ns: &str) -> Result<Caller> {
        if real.uid != 0 {
            return Err(Error::denied(format!(
                "only root may act on behalf of a Kubernetes namespace (uid {} asked for {})",
                real.uid,
                truncate(ns, 80)
            )));
        }
        check_namespace(ns)?;
        let name = format!("kubernetes-namespace/{ns}");
        let id = self.store.tenant_id(&name)?;
        if id >= u32::MAX - TENANT_UID_BASE {
            return Err(Error::exhausted("no tenant ids are left"));
        }
        let uid = TENANT_UID_BASE + id;
        if let Ok(mut m) = self.tenants.lock() {
            m.insert(uid, ns.to_string());
        }
        Ok(Caller {
            uid,
            gid: uid,
            pid: real.pid,
        })
    }

    /// The Kubernetes namespace a tenant uid stands for.
    pub(super) fn tenant_of(&self, uid: u32) -> Option<String> {
        if !is_tenant_uid(uid) {
            return None;
        }
        if let Ok(m) = self.tenants.lock()
            && let Some(n) = m.get(&uid)
        {
            return Some(n.clone());
        }
        let name = self
            .store
            .tenant_name(uid - TENANT_UID_BASE)
            .ok()
            .flatten()?;
        let ns = name.strip_prefix("kubernetes-namespace/")?.to_string();
        if let Ok(mut m) = self.tenants.lock() {
            m.insert(uid, ns.clone());
        }
        Some(ns)
    }

    /// The caller as the policy sees it: a tenant by its namespace, anyone else by the
    /// system's user database. A uid in the tenant range that is no tenant names nobody.
    pub(super) fn subject(&self, caller: Caller) -> Subject {
        if is_tenant_uid(caller.uid) {
            return match self.tenant_of(caller.uid) {
                Some(ns) => Subject::tenant(caller.uid, &ns),
                None => Subject {
                    uid: caller.uid,
                    user: None,
                    groups: Vec::new(),
                    tenant: Some(String::new()),
                },
            };
        }
        Subject::resolve(caller.uid, caller.gid)
    }
}

#[cfg(test)]
mod tests {
    use super::check_namespace;

    #[test]
    fn namespace_names_are_rfc1123_labels() {
        for ok in ["a", "team-a", "x1", &"a".repeat(63)] {
            assert!(check_namespace(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "Team",
            "a_b",
            "a/b",
            "..",
            &"a".repeat(64),
            "a\nb",
        ] {
            assert!(check_namespace(bad).is_err(), "{bad}");
        }
    }
}
