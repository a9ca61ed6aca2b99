//! Who may do what: the policy in force, the audit log, quota reservations, and the
//! two-step decision every public method takes (a coarse check before any state is
//! read, then the full decision with the request's facts).

use super::*;

/// The audit log: one JSON object per decided mutating request, written when the
/// operation ends with its outcome.
pub(super) struct AuditLog {
    pub(super) file: Mutex<Option<std::fs::File>>,
}

impl AuditLog {
    pub(super) fn write(&self, entry: &serde_json::Value) {
        if let Ok(mut a) = self.file.lock()
            && let Some(f) = a.as_mut()
            && let Err(e) = writeln!(f, "{entry}")
        {
            warn!("writing the audit log: {e}");
        }
        info!(target: "audit", "{entry}");
    }
}

/// Cuts `s` to at most `max` bytes (on a character boundary), marking the cut.
pub(super) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes in all)", &s[..end], s.len())
}

/// An allowed mutating request whose audit line is written with its outcome.
pub struct Ticket {
    log: Arc<AuditLog>,
    entry: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Ticket {
    pub(super) fn finish<T>(mut self, r: &Result<T>) {
        if let Some(mut e) = self.entry.take() {
            match r {
                Ok(_) => {
                    e.insert("outcome".into(), "succeeded".into());
                }
                Err(err) => {
                    e.insert("outcome".into(), "failed".into());
                    e.insert("error".into(), truncate(err.message(), 1024).into());
                }
            }
            self.log.write(&serde_json::Value::Object(e));
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(mut e) = self.entry.take() {
            e.insert("outcome".into(), "abandoned".into());
            self.log.write(&serde_json::Value::Object(e));
        }
    }
}

/// Programs and links being created, counted with the store's so that a quota check
/// and the creation it admits are one step.
#[derive(Default)]
pub(super) struct Reservations {
    pub(super) programs: HashMap<u32, u32>,
    pub(super) links: HashMap<u32, u32>,
    pub(super) all_programs: u64,
    pub(super) all_links: u64,
}

/// A held reservation; released when the objects are recorded (or the request fails).
pub(super) struct Reserved<'a> {
    pub(super) m: &'a Mutex<Reservations>,
    pub(super) uid: u32,
    pub(super) programs: u32,
    pub(super) links: u32,
}

impl Reserved<'_> {
    /// Records what was reserved (`f`: the store insert) and releases the reservation in one
    /// step under the reservations lock, so a concurrent `reserve` counts the new object once:
    /// never both as recorded and as reserved (a false refusal), never as neither (a quota
    /// passed). On failure the reservation stays until drop.
    pub(super) fn commit<T>(&mut self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let mut guard = match self.m.lock() {
            Ok(r) => r,
            Err(p) => p.into_inner(),
        };
        let r = f();
        if r.is_ok() {
            release(&mut guard, self.uid, self.programs, self.links);
            self.programs = 0;
            self.links = 0;
        }
        r
    }
}

fn release(r: &mut Reservations, uid: u32, programs: u32, links: u32) {
    for (map, n) in [(&mut r.programs, programs), (&mut r.links, links)] {
        if n == 0 {
            continue;
        }
        if let Some(v) = map.get_mut(&uid) {
            *v = v.saturating_sub(n);
            if *v == 0 {
                map.remove(&uid);
            }
        }
    }
    r.all_programs = r.all_programs.saturating_sub(programs as u64);
    r.all_links = r.all_links.saturating_sub(links as u64);
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        let mut guard = match self.m.lock() {
            Ok(r) => r,
            Err(p) => p.into_inner(),
        };
        release(&mut guard, self.uid, self.programs, self.links);
    }
}

/// Pulls in progress per uid (root is not counted).
pub(super) struct PullSlot<'a> {
    pub(super) m: &'a Mutex<HashMap<u32, u32>>,
    pub(super) uid: u32,
}

impl Drop for PullSlot<'_> {
    fn drop(&mut self) {
        let mut m = match self.m.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        if let Some(v) = m.get_mut(&self.uid) {
            *v = v.saturating_sub(1);
            if *v == 0 {
                m.remove(&self.uid);
            }
        }
    }
}

/// What a caller's file open is confined to under the rule that allowed the request.
pub(super) fn file_confine(grant: Option<&Rule>, path: &Path) -> Result<Confine> {
    match grant.and_then(|r| r.file_dirs.as_ref()) {
        None => Ok(Confine::Anywhere),
        Some(dirs) => crate::policy::granted_dir(dirs, path)
            .map(|d| Confine::Beneath(d.to_path_buf()))
            .ok_or_else(|| {
                Error::denied(format!(
                    "{} is not under a granted directory",
                    path.display()
                ))
            }),
    }
}

pub(super) fn identity(who: &Subject, caller: Caller) -> Identity {
    Identity {
        uid: caller.uid,
        gid: caller.gid,
        groups: who.groups.iter().map(|(g, _)| *g).collect(),
    }
}

pub(super) fn open_audit(p: &PolicyConfig) -> Result<Option<std::fs::File>> {
    let Some(path) = &p.audit_log else {
        return Ok(None);
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::invalid(format!("audit_log directory {}: {e}", dir.display())))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map(Some)
        .map_err(|e| Error::invalid(format!("opening audit_log {}: {e}", path.display())))
}

/// The caller's command line, for the audit log.
pub(super) fn command_of(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

impl Manager {
    /// Replaces the policy (and audit log) in force; programs and links stay as they are.
    /// Applies a re-read config (its policy and image settings), for a caller the policy
    /// lets `reload` (root always). Audited with its outcome.
    pub fn reload(&self, caller: Caller, c: &crate::config::Config) -> Result<()> {
        let what = "reload the daemon's config";
        let who = self.precheck(caller, Action::Reload, what)?;
        let (_, ticket) = self.decide(caller, &who, &Request::Admin(Action::Reload), what)?;
        let r = self
            .reload_policy(c.policy.clone())
            .and_then(|()| self.reload_images(&c.images));
        ticket.finish(&r);
        r
    }

    /// Re-reads the config file at `path` and applies it, for a caller the policy lets
    /// `reload` (authorized before the file is read); a bad file changes nothing.
    /// Returns the number of policy rules now in force. Audited.
    pub fn reload_file(&self, caller: Caller, path: &Path) -> Result<u32> {
        let what = "reload the daemon's config";
        let who = self.precheck(caller, Action::Reload, what)?;
        let (_, ticket) = self.decide(caller, &who, &Request::Admin(Action::Reload), what)?;
        let r = (|| {
            let c = Config::load(path, false)?;
            // Check the keys before changing anything, so a bad file changes nothing.
            SignaturePolicy::from_config(&c.images.signatures)?;
            self.reload_policy(c.policy.clone())?;
            self.reload_images(&c.images)?;
            Ok(c.policy.rules.len() as u32)
        })();
        ticket.finish(&r);
        r
    }

    pub(super) fn reload_policy(&self, p: PolicyConfig) -> Result<()> {
        let audit = open_audit(&p)?;
        if let Ok(mut a) = self.audit.file.lock() {
            *a = audit;
        }
        let rules = p.rules.len();
        if let Ok(mut cur) = self.policy.write() {
            *cur = Arc::new(Policy::new(p));
        }
        info!(rules, "policy reloaded");
        Ok(())
    }

    pub(super) fn policy(&self) -> Arc<Policy> {
        match self.policy.read() {
            Ok(p) => p.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Whether any policy rule names this caller (root always): callers no rule names
    /// are refused by the API layer before their requests are read.
    pub fn knows(&self, caller: Caller) -> bool {
        // A uid in the tenant range is never a real caller's.
        !crate::model::is_tenant_uid(caller.uid)
            && (caller.uid == 0 || self.policy().names(&self.subject(caller)))
    }

    /// An audit line's fields; `verdict` is (rule, allowed, reason).
    pub(super) fn audit_entry(
        &self,
        caller: Caller,
        who: &Subject,
        action: Action,
        what: &str,
        (rule, allowed, reason): (Option<&str>, bool, &str),
    ) -> serde_json::Map<String, serde_json::Value> {
        let v = serde_json::json!({
            "time": now_rfc3339(),
            "uid": caller.uid,
            "gid": caller.gid,
            "pid": caller.pid,
            "user": who.user,
            // Root acting on behalf of a Kubernetes namespace (the agent): both are shown.
            "on_behalf_of": who.tenant.as_ref().map(|t| format!("kubernetes-namespace/{t}")),
            "via_uid": who.tenant.as_ref().map(|_| 0),
            // What the client process's argv says: reported by the client, not verified.
            "command": truncate(&command_of(caller.pid), 256),
            "command_source": "client-reported (/proc/PID/cmdline)",
            "action": action.as_str(),
            "request": truncate(what, 512),
            "rule": rule,
            "decision": if allowed { "allow" } else { "deny" },
            "reason": truncate(reason, 1024),
        });
        match v {
            serde_json::Value::Object(m) => m,
            _ => serde_json::Map::new(),
        }
    }

    /// The coarse check, before any state is read: Err (audited, for mutating
    /// actions) unless some rule naming the caller grants `action`.
    pub(super) fn precheck(&self, caller: Caller, action: Action, what: &str) -> Result<Subject> {
        crate::request::check()?;
        let who = self.subject(caller);
        if let Err(reason) = self.policy().may(&who, action) {
            // `none`: no rule names the caller; `no_grant`: rules do, none grants this.
            let rule = self.policy().names(&who).then_some("no_grant");
            self.events.denied(action.as_str(), rule);
            if !matches!(action, Action::List | Action::Get) {
                let mut e = self.audit_entry(caller, &who, action, what, (None, false, &reason));
                e.insert("outcome".into(), "denied".into());
                self.audit.write(&serde_json::Value::Object(e));
            }
            let reason = match action {
                Action::Reload | Action::Reconcile => format!(
                    "{reason}; only root, or a rule granting '{}', may do this",
                    action.as_str()
                ),
                _ => reason,
            };
            return Err(Error::denied(reason));
        }
        Ok(who)
    }

    /// Decides a request with its facts. Denials are audited at once; an allowed
    /// mutating request gets a ticket whose audit line is written with the outcome.
    pub(super) fn decide(
        &self,
        caller: Caller,
        who: &Subject,
        req: &Request<'_>,
        what: &str,
    ) -> Result<(Decision, Ticket)> {
        let d = self.policy().decide(who, req);
        let mutating = !matches!(req, Request::Read(_));
        let mut entry = mutating.then(|| {
            self.audit_entry(
                caller,
                who,
                req.action(),
                what,
                (d.rule.as_deref(), d.allowed, &d.reason),
            )
        });
        if !d.allowed {
            self.events.denied(req.action().as_str(), d.rule.as_deref());
            if let Some(mut e) = entry.take() {
                e.insert("outcome".into(), "denied".into());
                self.audit.write(&serde_json::Value::Object(e));
            }
            return Err(Error::denied(d.reason));
        }
        Ok((
            d,
            Ticket {
                log: self.audit.clone(),
                entry,
            },
        ))
    }

    /// Decides a request (coarse check, then the facts); see [`Manager::decide`].
    pub fn authorize(&self, caller: Caller, req: &Request<'_>, what: &str) -> Result<Decision> {
        let who = self.precheck(caller, req.action(), what)?;
        let (d, ticket) = self.decide(caller, &who, req, what)?;
        ticket.finish(&Ok(()));
        Ok(d)
    }

    /// Read access (list, get) for a caller.
    pub(super) fn authorize_read(&self, caller: Caller, action: Action) -> Result<()> {
        self.precheck(caller, action, action.as_str()).map(|_| ())
    }

    /// Reserves room for `programs` new programs and `links` new links of `uid`,
    /// checking the daemon's limits; returns what the caller owns (recorded and being
    /// created) before this reservation.
    pub(super) fn reserve(
        &self,
        uid: u32,
        programs: u32,
        links: u32,
    ) -> Result<((u32, u32), Reserved<'_>)> {
        let mut r = self
            .reservations
            .lock()
            .map_err(|_| Error::internal("lock poisoned"))?;
        let (total_programs, total_links) = self.store.counts()?;
        let total_programs = total_programs + self.lingering(None) as u64;
        let (all_p, all_l) = (total_programs + r.all_programs, total_links + r.all_links);
        let max_p = self.config.daemon.max_programs as u64;
        if programs > 0 && all_p + programs as u64 > max_p {
            return Err(Error::precondition(format!(
                "the daemon already keeps {all_p} programs loaded; {max_p} is its limit \
                 ([daemon] max_programs); unload some first"
            )));
        }
        let max_l = self.config.daemon.max_links as u64;
        if links > 0 && all_l + links as u64 > max_l {
            return Err(Error::precondition(format!(
                "the daemon already keeps {all_l} links; {max_l} is its limit \
                 ([daemon] max_links); detach some first"
            )));
        }
        let owned_p = self.store.count_owned_programs(uid)?
            + r.programs.get(&uid).copied().unwrap_or(0)
            + self.lingering(Some(uid));
        let owned_l = self.store.count_owned_links(uid)? + r.links.get(&uid).copied().unwrap_or(0);
        if programs > 0 {
            *r.programs.entry(uid).or_default() += programs;
        }
        if links > 0 {
            *r.links.entry(uid).or_default() += links;
        }
        r.all_programs += programs as u64;
        r.all_links += links as u64;
        Ok((
            (owned_p, owned_l),
            Reserved {
                m: &self.reservations,
                uid,
                programs,
                links,
            },
        ))
    }

    pub(super) fn file_limits(&self) -> Limits {
        Limits {
            max_bytes: self.config.daemon.max_bytecode_bytes,
            deadline: Duration::from_secs(self.config.daemon.file_open_timeout_secs),
        }
    }
}
