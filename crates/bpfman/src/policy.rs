//! Who may do what: the daemon's access policy, from the `[policy]` section of its
//! config. Callers are identified by the kernel (SO_PEERCRED); their supplementary
//! groups are resolved by the daemon. Root is admin; everything not granted is denied.
//!
//! (Past 800 lines with its tests on purpose: some 310 lines of tests, one or more per
//! rule, sit beside the rules they check.)
//!
//! A request is allowed when at least one rule that names the caller (by user or group)
//! grants the action and every restriction of that rule holds. Omitted restrictions
//! restrict nothing, except `netns` and `images`: a rule reaches other network
//! namespaces and registries only when it names them.
//!
//! Globs never let `*` or `?` match `/`, and the manager refuses path-like values with
//! `.` or `..` components before the policy sees them, so a grant means what it says.

use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use crate::model::{AttachSpec, Bytecode, ProgramKind};

/// A user or group, by name or number.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Id {
    Num(u32),
    Name(String),
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Load,
    Attach,
    Detach,
    Unload,
    List,
    Get,
    Pull,
    /// Re-read the daemon's config (policy and image settings): `bpfman system reload`.
    Reload,
    /// Compare store, bpffs and kernel now and repair: `bpfman system reconcile`.
    Reconcile,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Load => "load",
            Self::Attach => "attach",
            Self::Detach => "detach",
            Self::Unload => "unload",
            Self::List => "list",
            Self::Get => "get",
            Self::Pull => "pull",
            Self::Reload => "reload",
            Self::Reconcile => "reconcile",
        }
    }
}

/// One `[[policy.rule]]`.
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    #[serde(default)]
    pub users: Vec<Id>,
    #[serde(default)]
    pub groups: Vec<Id>,
    #[serde(default)]
    pub actions: Vec<Action>,
    /// bpfman program types (xdp, tc, tcx, tracepoint, kprobe, kretprobe, uprobe, ...).
    pub program_types: Option<Vec<String>>,
    /// Bytecode files only from under these directories.
    pub file_dirs: Option<Vec<PathBuf>>,
    /// Image references by prefix (`"*"`: any); omitted: no images.
    pub images: Option<Vec<String>>,
    #[serde(default)]
    pub require_signature: bool,
    /// Interface name globs (`*`, `?`).
    pub interfaces: Option<Vec<String>>,
    /// Network namespace path globs; omitted: only the daemon's own namespace.
    pub netns: Option<Vec<String>>,
    /// Inclusive priority range on shared hooks.
    pub priority: Option<[i32; 2]>,
    /// Tracepoint globs (`CATEGORY/NAME`).
    pub tracepoints: Option<Vec<String>>,
    /// Kernel function globs for kprobes and fentry/fexit.
    pub kernel_functions: Option<Vec<String>>,
    /// LSM hook globs (`file_open`, `socket_*`); omitted: any hook, once `lsm` is granted.
    pub lsm_hooks: Option<Vec<String>>,
    /// Uprobe target paths: directories (prefix) or globs.
    pub uprobe_targets: Option<Vec<String>>,
    /// Kubernetes namespaces (globs) this rule names: requests the Kubernetes agent (root)
    /// makes on behalf of a namespaced `BpfApplication` in one of them. Such a tenant is
    /// named by no user or group rule, and users and groups never match it.
    pub kubernetes_namespaces: Option<Vec<String>>,
    /// Quota per caller.
    pub max_programs: Option<u32>,
    pub max_links: Option<u32>,
    /// May detach and unload what other callers created, and use their programs' maps.
    #[serde(default)]
    pub manage_others: bool,
    /// May scope uprobes to (`--pid`) or resolve them in (`--container-pid`) processes
    /// that do not belong to the caller.
    #[serde(default)]
    pub other_processes: bool,
}

/// The `[policy]` section.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Where decisions on mutating requests are appended (JSON lines).
    pub audit_log: Option<PathBuf>,
    #[serde(default, rename = "rule")]
    pub rules: Vec<Rule>,
}

/// The caller as the policy sees it.
#[derive(Debug, Clone)]
pub struct Subject {
    pub uid: u32,
    pub user: Option<String>,
    /// Primary and supplementary groups: (gid, name).
    pub groups: Vec<(u32, Option<String>)>,
    /// The Kubernetes namespace a root caller acts on behalf of (then `uid` is the
    /// namespace's own tenant id, and no user or group applies).
    pub tenant: Option<String>,
}

impl Subject {
    /// Resolves the caller's name and groups from the system's user database.
    pub fn resolve(uid: u32, gid: u32) -> Self {
        use nix::unistd::{Gid, Group, Uid, User};
        let user = User::from_uid(Uid::from_raw(uid)).ok().flatten();
        let mut gids = vec![Gid::from_raw(gid)];
        if let Some(u) = &user
            && let Ok(name) = std::ffi::CString::new(u.name.clone())
            && let Ok(list) = nix::unistd::getgrouplist(&name, Gid::from_raw(gid))
        {
            gids.extend(list);
        }
        gids.sort_by_key(|g| g.as_raw());
        gids.dedup();
        let groups = gids
            .into_iter()
            .map(|g| {
                let name = Group::from_gid(g).ok().flatten().map(|gr| gr.name);
                (g.as_raw(), name)
            })
            .collect();
        Self {
            uid,
            user: user.map(|u| u.name),
            groups,
            tenant: None,
        }
    }

    /// A Kubernetes namespace as a tenant, with its tenant id.
    pub fn tenant(uid: u32, namespace: &str) -> Self {
        Self {
            uid,
            user: None,
            groups: Vec::new(),
            tenant: Some(namespace.to_string()),
        }
    }

    /// Whether this is root itself (admin), not a tenant root acts for.
    pub fn is_root(&self) -> bool {
        self.uid == 0 && self.tenant.is_none()
    }

    pub fn describe(&self) -> String {
        if let Some(t) = &self.tenant {
            return format!("Kubernetes namespace {t}");
        }
        match &self.user {
            Some(n) => format!("uid {} ({n})", self.uid),
            None => format!("uid {}", self.uid),
        }
    }
}

/// What is being asked, with the facts the policy judges.
#[derive(Debug, Clone)]
pub enum Request<'a> {
    Load {
        bytecode: &'a Bytecode,
        kinds: Vec<ProgramKind>,
        /// Each program's load-time target: the kernel function of fentry/fexit, the
        /// hook of lsm.
        attach_fns: Vec<(ProgramKind, &'a str)>,
        owned_programs: u32,
        new_programs: u32,
        /// `--map-owner-id` of a program another user owns.
        foreign_map_owner: Option<u32>,
        /// Metadata keys under the reserved `bpfman.io/` prefix.
        reserved_metadata: Vec<&'a str>,
    },
    Attach {
        kind: ProgramKind,
        spec: &'a AttachSpec,
        owned_links: u32,
        /// Whether the program belongs to the caller.
        own_program: bool,
        /// `--pid`/`--container-pid` of a process that is not the caller's.
        foreign_process: Option<i32>,
        /// Metadata keys under the reserved `bpfman.io/` prefix.
        reserved_metadata: Vec<&'a str>,
    },
    Detach {
        own: bool,
    },
    Unload {
        own: bool,
    },
    Pull {
        image: &'a str,
    },
    Read(Action),
    /// An administrative action (reload, reconcile): granted by naming it, nothing more.
    Admin(Action),
}

impl Request<'_> {
    pub fn action(&self) -> Action {
        match self {
            Self::Load { .. } => Action::Load,
            Self::Attach { .. } => Action::Attach,
            Self::Detach { .. } => Action::Detach,
            Self::Unload { .. } => Action::Unload,
            Self::Pull { .. } => Action::Pull,
            Self::Read(a) | Self::Admin(a) => *a,
        }
    }
}

/// The outcome, with the rule that decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub rule: Option<String>,
    pub reason: String,
    /// The deciding rule demands images signed by a trusted key.
    pub require_signature: bool,
    /// The rule that allowed it (None for root and for denials): what the manager
    /// confines file opens to.
    pub grant: Option<Rule>,
}

/// Metadata keys under this prefix are written by bpfman itself (programs.d, the
/// Kubernetes agent): root's alone.
pub const RESERVED_METADATA_PREFIX: &str = bpfman_types::metadata::RESERVED_PREFIX;

/// The directory a granted path lies in, for confining the open: the `dirs` entry
/// `path` is under (lexically), if any.
pub fn granted_dir<'a>(dirs: &'a [PathBuf], path: &Path) -> Option<&'a Path> {
    dirs.iter().map(PathBuf::as_path).find(|d| under(path, d))
}

/// The directory a uprobe target may be opened beneath, from the `uprobe_targets`
/// entry that grants it: a directory entry itself, or for a glob or an exact file its
/// literal parent (globs never cross `/`, so the match lies directly in it).
pub fn uprobe_dir(targets: &[String], target: &str) -> Option<PathBuf> {
    for t in targets {
        if glob(t, target) {
            let literal = t.split(['*', '?']).next().unwrap_or("");
            let parent = match literal.rfind('/') {
                Some(0) => "/",
                Some(i) => &literal[..i],
                None => return None,
            };
            return Some(PathBuf::from(parent));
        }
        if under(Path::new(target), Path::new(t)) {
            return Some(PathBuf::from(t));
        }
    }
    None
}

/// Simple glob: `*` any run and `?` any one character, neither matching `/`.
/// Linear in time (iterative matcher with one backtrack point per `/`-free segment).
pub fn glob(pattern: &str, s: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = s.chars().collect();
    let (mut pi, mut si) = (0, 0);
    // Where the last `*` was, and where in `s` it started matching.
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some('?') if s[si] != '/' => {
                pi += 1;
                si += 1;
            }
            Some(c) if *c != '*' && *c != '?' && *c == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                // Let the last `*` take one more character, unless that is a `/`.
                Some((sp, ss)) if s[ss] != '/' => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                _ => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Whether `path` (absolute, normalised lexically) lies under `dir`.
fn under(path: &Path, dir: &Path) -> bool {
    let norm = |p: &Path| -> Option<PathBuf> {
        let mut out = PathBuf::new();
        for c in p.components() {
            match c {
                Component::RootDir => out.push("/"),
                Component::Normal(n) => out.push(n),
                Component::CurDir => {}
                Component::ParentDir => {
                    if !out.pop() {
                        return None;
                    }
                }
                Component::Prefix(_) => return None,
            }
        }
        Some(out)
    };
    match (norm(path), norm(dir)) {
        (Some(p), Some(d)) => p.starts_with(d),
        _ => false,
    }
}

fn id_matches(ids: &[Id], num: u32, name: Option<&str>) -> bool {
    ids.iter().any(|i| match i {
        Id::Num(n) => *n == num,
        Id::Name(s) => Some(s.as_str()) == name || s.parse::<u32>().ok() == Some(num),
    })
}

impl Rule {
    pub fn names(&self, who: &Subject) -> bool {
        if let Some(t) = &who.tenant {
            return self
                .kubernetes_namespaces
                .iter()
                .flatten()
                .any(|g| glob(g, t));
        }
        id_matches(&self.users, who.uid, who.user.as_deref())
            || who
                .groups
                .iter()
                .any(|(g, n)| id_matches(&self.groups, *g, n.as_deref()))
    }

    // Long on purpose: one arm per request kind, each the whole rule for it, so a
    // reviewer reads every condition a grant imposes in one place.
    /// Checks the rule's restrictions; Err names the one that fails.
    fn check(&self, req: &Request<'_>) -> Result<(), String> {
        let action = req.action();
        // Loading from an image pulls it: a rule that grants load grants pulling the
        // images it allows (its `images` prefixes still apply).
        let implied = action == Action::Pull && self.actions.contains(&Action::Load);
        if !self.actions.contains(&action) && !implied {
            return Err(format!("it does not grant '{}'", action.as_str()));
        }
        let kind_ok = |k: ProgramKind| -> Result<(), String> {
            match &self.program_types {
                Some(t) if !t.iter().any(|x| x == k.as_str()) => Err(format!(
                    "program type {k} is not among its program_types ({})",
                    t.join(", ")
                )),
                // An LSM program decides for the whole system (it can deny root's opens):
                // granted only by name, never by an omitted program_types.
                None if k == ProgramKind::Lsm => Err(
                    "program type lsm is granted only by name: the rule has no program_types \
                     (add \"lsm\" to program_types to grant it)"
                        .to_string(),
                ),
                _ => Ok(()),
            }
        };
        match req {
            Request::Load {
                bytecode,
                kinds,
                attach_fns,
                owned_programs,
                new_programs,
                foreign_map_owner,
                reserved_metadata,
            } => {
                reserved_ok(reserved_metadata)?;
                for k in kinds {
                    kind_ok(*k)?;
                }
                if let Some(owner) = foreign_map_owner
                    && !self.manage_others
                {
                    return Err(format!(
                        "map owner program {owner} belongs to another user (its maps are \
                         shared only with manage_others)"
                    ));
                }
                match bytecode {
                    Bytecode::File(f) => {
                        if let Some(dirs) = &self.file_dirs
                            && !dirs.iter().any(|d| under(Path::new(f), d))
                        {
                            return Err(format!(
                                "bytecode file {f} is not under its file_dirs ({})",
                                dirs.iter()
                                    .map(|d| d.display().to_string())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ));
                        }
                    }
                    Bytecode::Image { url, .. } => self.image_ok(url)?,
                }
                for (kind, f) in attach_fns {
                    let (globs, what) = match kind {
                        ProgramKind::Lsm => (&self.lsm_hooks, "LSM hook"),
                        _ => (&self.kernel_functions, "kernel function"),
                    };
                    if let Some(globs) = globs
                        && !globs.iter().any(|g| glob(g, f))
                    {
                        return Err(format!(
                            "{what} {f} is not among its {}",
                            if *kind == ProgramKind::Lsm {
                                "lsm_hooks"
                            } else {
                                "kernel_functions"
                            }
                        ));
                    }
                }
                if let Some(max) = self.max_programs
                    && *owned_programs + *new_programs > max
                {
                    return Err(format!(
                        "max_programs is {max} and the caller has {owned_programs}; this load adds {new_programs}"
                    ));
                }
                Ok(())
            }
            Request::Attach {
                kind,
                spec,
                owned_links,
                own_program,
                foreign_process,
                reserved_metadata,
            } => {
                reserved_ok(reserved_metadata)?;
                kind_ok(*kind)?;
                if !own_program && !self.manage_others {
                    return Err("the program belongs to another user".into());
                }
                if let Some(pid) = foreign_process
                    && !self.other_processes
                {
                    return Err(format!(
                        "process {pid} does not belong to the caller (other_processes is not \
                         granted)"
                    ));
                }
                if let Some(h) = spec.net_hook() {
                    if let Some(globs) = &self.interfaces
                        && !globs.iter().any(|g| glob(g, &h.iface))
                    {
                        return Err(format!(
                            "interface {} is not among its interfaces ({})",
                            h.iface,
                            globs.join(", ")
                        ));
                    }
                    if let Some([lo, hi]) = self.priority
                        && !(lo..=hi).contains(&h.priority)
                    {
                        return Err(format!(
                            "priority {} is outside its range {lo}..={hi}",
                            h.priority
                        ));
                    }
                    match (&h.netns, &self.netns) {
                        (Some(ns), Some(globs)) if !globs.iter().any(|g| glob(g, ns)) => {
                            return Err(format!("network namespace {ns} is not among its netns"));
                        }
                        (Some(ns), None) => {
                            return Err(format!(
                                "network namespace {ns}: the rule grants none (add netns = [...])"
                            ));
                        }
                        _ => {}
                    }
                }
                match spec {
                    AttachSpec::Tracepoint { tracepoint } => {
                        if let Some(g) = &self.tracepoints
                            && !g.iter().any(|g| glob(g, tracepoint))
                        {
                            return Err(format!(
                                "tracepoint {tracepoint} is not among its tracepoints"
                            ));
                        }
                    }
                    AttachSpec::Kprobe { fn_name, .. } => {
                        if let Some(g) = &self.kernel_functions
                            && !g.iter().any(|g| glob(g, fn_name))
                        {
                            return Err(format!(
                                "kernel function {fn_name} is not among its kernel_functions"
                            ));
                        }
                    }
                    AttachSpec::Uprobe { target, .. } => {
                        if let Some(t) = &self.uprobe_targets
                            && uprobe_dir(t, target).is_none()
                        {
                            return Err(format!(
                                "uprobe target {target} is not among its uprobe_targets"
                            ));
                        }
                    }
                    _ => {}
                }
                if let Some(max) = self.max_links
                    && *owned_links >= max
                {
                    return Err(format!(
                        "max_links is {max} and the caller has {owned_links}"
                    ));
                }
                Ok(())
            }
            Request::Detach { own } | Request::Unload { own } => {
                if !own && !self.manage_others {
                    Err("it belongs to another user".into())
                } else {
                    Ok(())
                }
            }
            Request::Pull { image } => self.image_ok(image),
            Request::Read(_) | Request::Admin(_) => Ok(()),
        }
    }

    fn image_ok(&self, url: &str) -> Result<(), String> {
        match &self.images {
            None => Err(format!(
                "image {url}: the rule grants no images (add images = [\"PREFIX\"], or \
                 [\"*\"] for any)"
            )),
            Some(p) if !p.iter().any(|p| p == "*" || url.starts_with(p.as_str())) => Err(format!(
                "image {url} does not start with any of its images ({})",
                p.join(", ")
            )),
            _ => Ok(()),
        }
    }
}

fn reserved_ok(keys: &[&str]) -> Result<(), String> {
    match keys.first() {
        Some(k) => Err(format!(
            "metadata key '{k}' is under '{RESERVED_METADATA_PREFIX}', which only root may set"
        )),
        None => Ok(()),
    }
}

/// The policy in force.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub config: PolicyConfig,
}

impl Policy {
    pub fn new(config: PolicyConfig) -> Self {
        Self { config }
    }

    /// Whether any rule names the caller at all (callers no rule names are refused
    /// before their requests are even read).
    pub fn names(&self, who: &Subject) -> bool {
        who.is_root() || self.config.rules.iter().any(|r| r.names(who))
    }

    /// The coarse check made before any state is read: some rule naming the caller
    /// grants `action` (pulling is implied by load). Err is the denial's reason.
    pub fn may(&self, who: &Subject, action: Action) -> Result<(), String> {
        if who.is_root() {
            return Ok(());
        }
        let named: Vec<&Rule> = self.config.rules.iter().filter(|r| r.names(who)).collect();
        if named.is_empty() {
            return Err(format!(
                "'{}' denied: no policy rule names {}",
                action.as_str(),
                who.describe()
            ));
        }
        let grants = |r: &&Rule| {
            r.actions.contains(&action)
                || (action == Action::Pull && r.actions.contains(&Action::Load))
        };
        if named.iter().any(grants) {
            Ok(())
        } else {
            Err(format!(
                "'{}' denied for {}: no rule naming it grants '{}' ({})",
                action.as_str(),
                who.describe(),
                action.as_str(),
                named
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    }

    pub fn decide(&self, who: &Subject, req: &Request<'_>) -> Decision {
        if who.is_root() {
            return Decision {
                allowed: true,
                rule: Some("root".into()),
                reason: "root is admin".into(),
                require_signature: false,
                grant: None,
            };
        }
        let mut reasons = Vec::new();
        for r in self.config.rules.iter().filter(|r| r.names(who)) {
            match r.check(req) {
                Ok(()) => {
                    return Decision {
                        allowed: true,
                        rule: Some(r.name.clone()),
                        reason: format!("rule '{}' allows it", r.name),
                        require_signature: r.require_signature,
                        grant: Some(r.clone()),
                    };
                }
                Err(why) => reasons.push((r.name.clone(), why)),
            }
        }
        let action = req.action().as_str();
        match reasons.first() {
            None => Decision {
                allowed: false,
                require_signature: false,
                grant: None,
                rule: None,
                reason: format!("'{action}' denied: no policy rule names {}", who.describe()),
            },
            Some((rule, _)) => Decision {
                allowed: false,
                require_signature: false,
                grant: None,
                rule: Some(rule.clone()),
                reason: format!(
                    "'{action}' denied for {}: {}",
                    who.describe(),
                    reasons
                        .iter()
                        .map(|(n, w)| format!("rule '{n}': {w}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NetHook;

    fn subject(uid: u32, user: &str, groups: &[(u32, &str)]) -> Subject {
        Subject {
            uid,
            user: Some(user.into()),
            groups: groups
                .iter()
                .map(|(g, n)| (*g, Some(n.to_string())))
                .collect(),
            tenant: None,
        }
    }

    fn policy(toml_text: &str) -> Policy {
        #[derive(Deserialize)]
        struct W {
            policy: PolicyConfig,
        }
        let w: W = match toml::from_str(toml_text) {
            Ok(w) => w,
            Err(e) => panic!("{e}"),
        };
        Policy::new(w.policy)
    }

    const TEAM_A: &str = r#"
        [[policy.rule]]
        name = "team-a"
        groups = ["team-a"]
        actions = ["load", "attach", "detach", "unload", "list", "get"]
        program_types = ["xdp", "tcx", "tracepoint"]
        file_dirs = ["/opt/team-a/bpf"]
        interfaces = ["veth*"]
        priority = [100, 500]
        max_programs = 2
        max_links = 1
    "#;

    fn xdp(iface: &str, prio: i32) -> AttachSpec {
        AttachSpec::Xdp(NetHook {
            iface: iface.into(),
            priority: prio,
            proceed_on: vec![],
            netns: None,
            direction: None,
        })
    }

    #[test]
    fn globs() {
        assert!(glob("veth*", "veth0"));
        assert!(glob("*", ""));
        assert!(glob("e?h0", "eth0"));
        assert!(!glob("veth*", "eth0"));
        assert!(glob("syscalls/sys_enter_*", "syscalls/sys_enter_openat"));
        // Neither wildcard crosses '/'.
        assert!(!glob(
            "syscalls/sys_enter_*",
            "syscalls/sys_enter_x/../../sched/y"
        ));
        assert!(!glob("/var/run/netns/a-*", "/var/run/netns/a-x/../b"));
        assert!(!glob("/opt/a/*", "/opt/a/b/c"));
        assert!(!glob("/opt/a?b", "/opt/a/b"));
        assert!(glob("/opt/*/bin/*", "/opt/x/bin/y"));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXbYY"));
        assert!(glob("**", "abc"));
        // Same answers as the plain recursive definition, on many small cases.
        fn reference(p: &[char], s: &[char]) -> bool {
            match (p.first(), s.first()) {
                (None, None) => true,
                (Some('*'), _) => {
                    reference(&p[1..], s)
                        || (s.first().is_some_and(|c| *c != '/') && reference(p, &s[1..]))
                }
                (Some('?'), Some(c)) if *c != '/' => reference(&p[1..], &s[1..]),
                (Some(a), Some(b)) if a == b && *a != '?' => reference(&p[1..], &s[1..]),
                _ => false,
            }
        }
        let alphabet = ['a', 'b', '/', '*', '?'];
        let mut seed = 0x2545_f491_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let pl = (next() % 6) as usize;
            let sl = (next() % 7) as usize;
            let p: String = (0..pl).map(|_| alphabet[(next() % 5) as usize]).collect();
            let s: String = (0..sl).map(|_| alphabet[(next() % 3) as usize]).collect();
            let want = reference(
                &p.chars().collect::<Vec<_>>(),
                &s.chars().collect::<Vec<_>>(),
            );
            assert_eq!(glob(&p, &s), want, "glob({p:?}, {s:?})");
        }
        // Linear: a pathological pattern answers at once.
        let long = "a".repeat(10_000);
        assert!(!glob(&"*a".repeat(50), &format!("{long}b")));
    }

    #[test]
    fn uprobe_targets_confine_to_their_literal_directory() {
        let t = vec![
            "/opt/a/bin".to_string(),
            "/opt/b/lib/*.so".to_string(),
            "/usr/lib/libc.so.6".to_string(),
        ];
        assert_eq!(
            uprobe_dir(&t, "/opt/a/bin/x"),
            Some(PathBuf::from("/opt/a/bin"))
        );
        assert_eq!(
            uprobe_dir(&t, "/opt/a/bin/sub/x"),
            Some(PathBuf::from("/opt/a/bin"))
        );
        assert_eq!(
            uprobe_dir(&t, "/opt/b/lib/z.so"),
            Some(PathBuf::from("/opt/b/lib"))
        );
        assert_eq!(uprobe_dir(&t, "/opt/b/lib/sub/z.so"), None);
        assert_eq!(
            uprobe_dir(&t, "/usr/lib/libc.so.6"),
            Some(PathBuf::from("/usr/lib"))
        );
        assert_eq!(uprobe_dir(&t, "/opt/ab/x"), None);
    }

    #[test]
    fn paths_do_not_escape_with_dotdot() {
        assert!(under(Path::new("/opt/a/x.o"), Path::new("/opt/a")));
        assert!(!under(Path::new("/opt/a/../b/x.o"), Path::new("/opt/a")));
        assert!(!under(Path::new("/opt/ab/x.o"), Path::new("/opt/a")));
    }

    #[test]
    fn tenant_within_and_outside_grants() {
        let p = policy(TEAM_A);
        let alice = subject(1001, "alice", &[(1001, "alice"), (2000, "team-a")]);
        let file = Bytecode::File("/opt/team-a/bpf/x.o".into());
        let load = |kinds: Vec<ProgramKind>, b: &Bytecode, owned| {
            p.decide(
                &alice,
                &Request::Load {
                    bytecode: b,
                    kinds,
                    attach_fns: vec![],
                    owned_programs: owned,
                    new_programs: 1,
                    foreign_map_owner: None,
                    reserved_metadata: vec![],
                },
            )
        };
        assert!(load(vec![ProgramKind::Xdp], &file, 0).allowed);
        let d = load(vec![ProgramKind::Kprobe], &file, 0);
        assert!(
            !d.allowed && d.reason.contains("program type kprobe"),
            "{}",
            d.reason
        );
        let elsewhere = Bytecode::File("/tmp/x.o".into());
        let d = load(vec![ProgramKind::Xdp], &elsewhere, 0);
        assert!(!d.allowed && d.reason.contains("file_dirs"), "{}", d.reason);
        let d = load(vec![ProgramKind::Xdp], &file, 2);
        assert!(
            !d.allowed && d.reason.contains("max_programs"),
            "{}",
            d.reason
        );

        let attach = |spec: &AttachSpec, links| {
            p.decide(
                &alice,
                &Request::Attach {
                    kind: ProgramKind::Xdp,
                    spec,
                    owned_links: links,
                    own_program: true,
                    foreign_process: None,
                    reserved_metadata: vec![],
                },
            )
        };
        assert!(attach(&xdp("veth1", 200), 0).allowed);
        assert!(
            attach(&xdp("eth0", 200), 0)
                .reason
                .contains("interface eth0")
        );
        assert!(attach(&xdp("veth1", 50), 0).reason.contains("priority 50"));
        assert!(attach(&xdp("veth1", 200), 1).reason.contains("max_links"));
        // Other users' objects.
        assert!(!p.decide(&alice, &Request::Unload { own: false }).allowed);
        assert!(p.decide(&alice, &Request::Unload { own: true }).allowed);
        assert_eq!(
            p.decide(&alice, &Request::Unload { own: true })
                .rule
                .as_deref(),
            Some("team-a")
        );
    }

    #[test]
    fn lsm_is_granted_only_by_name_and_hooks_by_lsm_hooks() {
        let open = r#"
            [[policy.rule]]
            name = "anything"
            users = ["alice"]
            actions = ["load"]
            kernel_functions = ["*"]
        "#;
        let named = r#"
            [[policy.rule]]
            name = "lsm"
            users = ["alice"]
            actions = ["load"]
            program_types = ["lsm", "fentry"]
            kernel_functions = ["*"]
            lsm_hooks = ["file_*"]
        "#;
        let alice = subject(1001, "alice", &[(1001, "alice")]);
        let file = Bytecode::File("/x.o".into());
        let load = |p: &Policy, kind: ProgramKind, target: &str| {
            p.decide(
                &alice,
                &Request::Load {
                    bytecode: &file,
                    kinds: vec![kind],
                    attach_fns: vec![(kind, target)],
                    owned_programs: 0,
                    new_programs: 1,
                    foreign_map_owner: None,
                    reserved_metadata: vec![],
                },
            )
        };
        // A rule that restricts no program type still does not grant lsm, and its
        // kernel_functions = ["*"] does not reach LSM hooks.
        let d = load(&policy(open), ProgramKind::Lsm, "file_open");
        assert!(
            !d.allowed && d.reason.contains("granted only by name"),
            "{}",
            d.reason
        );
        assert!(load(&policy(open), ProgramKind::Fentry, "do_sys_openat2").allowed);
        let p = policy(named);
        assert!(load(&p, ProgramKind::Lsm, "file_open").allowed);
        let d = load(&p, ProgramKind::Lsm, "bprm_check_security");
        assert!(!d.allowed && d.reason.contains("lsm_hooks"), "{}", d.reason);
        // lsm_hooks are for LSM only: fentry targets stay under kernel_functions.
        assert!(load(&p, ProgramKind::Fentry, "bprm_check_security").allowed);
    }

    #[test]
    fn reload_and_reconcile_are_actions_a_rule_grants() {
        let p = policy(
            r#"
            [[policy.rule]]
            name = "operator"
            users = ["op"]
            actions = ["reconcile", "list"]
            "#,
        );
        let op = subject(1002, "op", &[(1002, "op")]);
        assert!(p.decide(&op, &Request::Admin(Action::Reconcile)).allowed);
        let d = p.decide(&op, &Request::Admin(Action::Reload));
        assert!(!d.allowed && d.reason.contains("reload"), "{}", d.reason);
        let alice = subject(1001, "alice", &[(1001, "alice")]);
        assert!(!p.decide(&alice, &Request::Admin(Action::Reconcile)).allowed);
        assert!(
            p.decide(
                &subject(0, "root", &[(0, "root")]),
                &Request::Admin(Action::Reload)
            )
            .allowed
        );
    }

    #[test]
    fn unknown_callers_are_denied_and_root_is_admin() {
        let p = policy(TEAM_A);
        let bob = subject(1002, "bob", &[(1002, "bob")]);
        let d = p.decide(&bob, &Request::Read(Action::List));
        assert!(!d.allowed && d.reason.contains("no policy rule names uid 1002 (bob)"));
        let root = subject(0, "root", &[(0, "root")]);
        assert!(p.decide(&root, &Request::Unload { own: false }).allowed);
        // No policy at all: only root.
        let empty = Policy::default();
        assert!(!empty.decide(&bob, &Request::Read(Action::List)).allowed);
    }

    #[test]
    fn kubernetes_namespaces_name_tenants_and_only_tenants() {
        let p = policy(
            r#"
[[policy.rule]]
name = "ns"
kubernetes_namespaces = ["team-*"]
actions = ["list"]

[[policy.rule]]
name = "root-by-number"
users = [0]
actions = ["list"]
"#,
        );
        let t = Subject::tenant(0xF000_0001, "team-a");
        assert!(!t.is_root(), "a tenant root acts for is not root");
        assert!(p.names(&t));
        assert!(p.may(&t, Action::List).is_ok());
        assert!(p.may(&t, Action::Load).is_err());
        assert!(!p.names(&Subject::tenant(0xF000_0002, "other")));
        // A user rule never names a tenant, a namespace rule never names a user.
        let r = &p.config.rules[1];
        assert!(!r.names(&Subject::tenant(0, "team-a")));
        assert!(!p.config.rules[0].names(&subject(1000, "team-a", &[])));
    }

    #[test]
    fn rules_reject_unknown_keys() {
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        struct W {
            policy: PolicyConfig,
        }
        let r: Result<W, _> = toml::from_str("[[policy.rule]]\nname='x'\nprogram_type=['xdp']\n");
        assert!(r.is_err());
    }
}
