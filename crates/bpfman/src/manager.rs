//! The manager owns the rules: what may be loaded and attached where, in which order,
//! who owns what, and how store and kernel are kept in step. It calls `store` and
//! `kernel`; the API layer calls it and only translates.
//!
//! Every call is synchronous (kernel work blocks); the daemon runs calls on blocking
//! threads. There is no global lock: the store serialises its own SQL, and objects are
//! locked one by one (a program, a hook), always program before hook.
//!
//! Every mutating call authorizes first and works after: a coarse check (does any rule
//! naming the caller grant the action?) before any state is read, then the full
//! decision with the request's facts, and only then files, locks, the reconciliation
//! gate and the kernel. Files the caller names are opened as the caller (`access`).
//! Quotas are reserved atomically with their check. Each decision is audited with the
//! operation's outcome.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tracing::{info, warn};

use crate::access::{self, Confine, Identity, Limits};
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::fault;
use crate::image::registry::Credentials;
use crate::image::{ImageRecord, ImageService, Progress, PullPolicy, SignaturePolicy};
use crate::kernel::dispatch::{DispatchKind, TcFilter};
use crate::kernel::probe::Features;
use crate::kernel::{Kernel, KernelProgram, LoadPlan, TcxAnchor, netns_id};
use crate::model::{
    AttachSpec, Bytecode, Caller, Link, LoadRequest, NetHook, Program, ProgramKind, now_rfc3339,
};
use crate::policy::{
    Action, Decision, Policy, PolicyConfig, RESERVED_METADATA_PREFIX, Request, Rule, Subject,
};
use crate::store::{Store, hook_key};

/// XDP return codes a program may continue the chain on (and the dispatcher's own).
pub const XDP_PROCEED_ON: &[(&str, i32)] = &[
    ("aborted", 0),
    ("drop", 1),
    ("pass", 2),
    ("tx", 3),
    ("redirect", 4),
    ("dispatcher_return", 31),
];
/// TC return codes a program may continue the chain on.
pub const TC_PROCEED_ON: &[(&str, i32)] = &[
    ("unspec", -1),
    ("ok", 0),
    ("reclassify", 1),
    ("shot", 2),
    ("pipe", 3),
    ("stolen", 4),
    ("queued", 5),
    ("repeat", 6),
    ("redirect", 7),
    ("trap", 8),
    ("dispatcher_return", 30),
];

/// Where the daemon keeps its state.
#[derive(Debug, Clone)]
pub struct Paths {
    pub runtime_dir: PathBuf,
    pub bpffs: PathBuf,
    pub database: PathBuf,
    pub socket: PathBuf,
}

impl Paths {
    pub fn new(runtime_dir: &Path, socket: &Path) -> Self {
        Self {
            runtime_dir: runtime_dir.to_path_buf(),
            bpffs: runtime_dir.join("fs"),
            database: runtime_dir.join("db").join("store.db"),
            socket: socket.to_path_buf(),
        }
    }
}

/// A program with what the kernel says of it.
#[derive(Debug, Clone)]
pub struct ProgramView {
    pub program: Option<Program>,
    pub kernel: KernelProgram,
    pub links: Vec<u32>,
    pub map_used_by: Vec<u32>,
}

/// A link with what a listing shows beside it.
#[derive(Debug, Clone)]
pub struct LinkView {
    pub link: Link,
    /// The name of the program it runs ("" when its record is gone).
    pub program_name: String,
    /// The hook's dispatcher revision (0: not through a dispatcher).
    pub dispatcher_revision: u32,
}

/// Filters for `list`.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// The kernel's bpf_prog_type number.
    pub kernel_type: Option<u32>,
    /// Include programs bpfman did not load.
    pub all: bool,
    pub metadata: BTreeMap<String, String>,
}

/// A report of what reconciliation found and did.
#[derive(Debug, Clone, Default)]
pub struct ReconcileReport {
    pub actions: Vec<String>,
}

/// Metadata limits per program or link: enough for every real use (upstream's Kubernetes
/// agent writes two keys), small enough that no tenant can make listings unanswerable.
pub const MAX_METADATA_ENTRIES: usize = 64;
pub const MAX_METADATA_KEY: usize = 253;
pub const MAX_METADATA_VALUE: usize = 1024;
pub const MAX_METADATA_TOTAL: usize = 4096;
/// The longest function, tracepoint or interface-independent name accepted.
pub const MAX_NAME: usize = 256;
/// Global-data overrides per load, and bytes in all.
pub const MAX_GLOBALS: usize = 256;
pub const MAX_GLOBAL_BYTES: usize = 256 << 10;

/// The audit log: one JSON object per decided mutating request, written when the
/// operation ends with its outcome.
struct AuditLog {
    file: Mutex<Option<std::fs::File>>,
}

impl AuditLog {
    fn write(&self, entry: &serde_json::Value) {
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
fn truncate(s: &str, max: usize) -> String {
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
    fn finish<T>(mut self, r: &Result<T>) {
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
struct Reservations {
    programs: HashMap<u32, u32>,
    links: HashMap<u32, u32>,
    all_programs: u64,
    all_links: u64,
}

/// A held reservation; released when the objects are recorded (or the request fails).
struct Reserved<'a> {
    m: &'a Mutex<Reservations>,
    uid: u32,
    programs: u32,
    links: u32,
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        let mut guard = match self.m.lock() {
            Ok(r) => r,
            Err(p) => p.into_inner(),
        };
        let r = &mut *guard;
        for (map, n) in [(&mut r.programs, self.programs), (&mut r.links, self.links)] {
            if n == 0 {
                continue;
            }
            if let Some(v) = map.get_mut(&self.uid) {
                *v = v.saturating_sub(n);
                if *v == 0 {
                    map.remove(&self.uid);
                }
            }
        }
        r.all_programs = r.all_programs.saturating_sub(self.programs as u64);
        r.all_links = r.all_links.saturating_sub(self.links as u64);
    }
}

/// Pulls in progress per uid (root is not counted).
struct PullSlot<'a> {
    m: &'a Mutex<HashMap<u32, u32>>,
    uid: u32,
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

/// A process a probe is scoped to or resolved in, held by a pidfd so that a pid reused
/// by another process between the check and the attach is noticed.
struct ProcessRef {
    pid: i32,
    pidfd: std::os::fd::OwnedFd,
}

impl ProcessRef {
    fn open(pid: i32) -> Result<Self> {
        if pid <= 0 {
            return Err(Error::invalid(format!("invalid pid {pid}")));
        }
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(Error::not_found(format!("process {pid} does not exist")));
        }
        // SAFETY: fd is a fresh descriptor this function owns.
        let pidfd =
            unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
        Ok(Self { pid, pidfd })
    }

    /// Whether every uid of the process (real, effective, saved, filesystem) is `uid`.
    fn belongs_to(&self, uid: u32) -> Result<bool> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .map_err(|_| Error::not_found(format!("process {} does not exist", self.pid)))?;
        let uids: Vec<u32> = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .map(|l| {
                l.split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        self.alive()?;
        Ok(uids.len() == 4 && uids.iter().all(|u| *u == uid))
    }

    /// Err when the process the pidfd names has exited (its pid may now be another's).
    fn alive(&self) -> Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: signal 0 only checks that the process exists; no info struct is passed.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                0,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(Error::not_found(format!(
                "process {} exited while the request was checked",
                self.pid
            )))
        }
    }

    /// Whether its mount namespace is owned by the daemon's own user namespace (set up
    /// by a privileged runtime), not by one an unprivileged user made.
    fn mounts_owned_by_init_userns(&self) -> Result<bool> {
        use std::os::fd::{AsRawFd, FromRawFd};
        use std::os::unix::fs::MetadataExt;
        let mnt = std::fs::File::open(format!("/proc/{}/ns/mnt", self.pid)).map_err(|e| {
            Error::not_found(format!("process {}: its mount namespace: {e}", self.pid))
        })?;
        const NS_GET_USERNS: libc::c_ulong = 0xb701;
        // SAFETY: NS_GET_USERNS takes no argument and returns a new fd or -1.
        let fd = unsafe { libc::ioctl(mnt.as_raw_fd(), NS_GET_USERNS) };
        if fd < 0 {
            return Err(Error::kernel(format!(
                "NS_GET_USERNS on the mount namespace of process {}: {}",
                self.pid,
                std::io::Error::last_os_error()
            )));
        }
        // SAFETY: fd is a fresh descriptor owned here.
        let owner = unsafe { std::fs::File::from_raw_fd(fd) };
        let own = std::fs::metadata("/proc/self/ns/user")
            .map_err(|e| Error::internal(format!("reading the daemon's user namespace: {e}")))?;
        let theirs = owner
            .metadata()
            .map_err(|e| Error::internal(format!("fstat of a user namespace: {e}")))?;
        Ok(own.ino() == theirs.ino() && own.dev() == theirs.dev())
    }
}

/// Checks metadata against the limits above.
fn check_metadata(m: &BTreeMap<String, String>, what: &str) -> Result<()> {
    if m.len() > MAX_METADATA_ENTRIES {
        return Err(Error::invalid(format!(
            "{what} has {} metadata entries; at most {MAX_METADATA_ENTRIES} are allowed",
            m.len()
        )));
    }
    let mut total = 0;
    for (k, v) in m {
        if k.is_empty() || k.len() > MAX_METADATA_KEY {
            return Err(Error::invalid(format!(
                "{what}: metadata keys must be 1 to {MAX_METADATA_KEY} bytes (one is {})",
                k.len()
            )));
        }
        if v.len() > MAX_METADATA_VALUE {
            return Err(Error::invalid(format!(
                "{what}: metadata value of '{}' is {} bytes; at most {MAX_METADATA_VALUE}",
                truncate(k, 64),
                v.len()
            )));
        }
        total += k.len() + v.len();
    }
    if total > MAX_METADATA_TOTAL {
        return Err(Error::invalid(format!(
            "{what}: metadata is {total} bytes in all; at most {MAX_METADATA_TOTAL}"
        )));
    }
    Ok(())
}

fn reserved_keys(m: &BTreeMap<String, String>) -> Vec<&str> {
    m.keys()
        .map(String::as_str)
        .filter(|k| k.starts_with(RESERVED_METADATA_PREFIX))
        .collect()
}

fn check_name(s: &str, what: &str) -> Result<()> {
    if s.len() > MAX_NAME {
        return Err(Error::invalid(format!(
            "{what} is {} bytes long; at most {MAX_NAME}",
            s.len()
        )));
    }
    if s.chars().any(|c| c.is_control()) {
        return Err(Error::invalid(format!(
            "{what} contains control characters"
        )));
    }
    Ok(())
}

/// A tracepoint is CATEGORY/NAME, each of letters, digits, '_' and '-'.
fn check_tracepoint(t: &str) -> Result<()> {
    let ok = |p: &str| {
        !p.is_empty()
            && p.len() <= MAX_NAME
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    match t.split_once('/') {
        Some((a, b)) if ok(a) && ok(b) => Ok(()),
        _ => Err(Error::invalid(format!(
            "tracepoint '{}' must be CATEGORY/NAME of letters, digits, '_' and '-', e.g. \
             syscalls/sys_enter_openat",
            truncate(t, 128)
        ))),
    }
}

/// What a caller's file open is confined to under the rule that allowed the request.
fn file_confine(grant: Option<&Rule>, path: &Path) -> Result<Confine> {
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

fn identity(who: &Subject, caller: Caller) -> Identity {
    Identity {
        uid: caller.uid,
        gid: caller.gid,
        groups: who.groups.iter().map(|(g, _)| *g).collect(),
    }
}

pub struct Manager {
    config: Config,
    policy: RwLock<Arc<Policy>>,
    audit: Arc<AuditLog>,
    reservations: Mutex<Reservations>,
    pulls: Mutex<HashMap<u32, u32>>,
    store: Store,
    kernel: Kernel,
    features: Features,
    paths: Paths,
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Programs whose Unload returned while the kernel still had them (something held a
    /// reference: a bpf_timer in their maps, a process's fd), by owner uid: they count
    /// against the owner's quota until the kernel lets them go.
    lingering: Mutex<HashMap<u32, Vec<u32>>>,
    /// Mutations (load, unload, attach, detach) hold it shared while they touch the
    /// kernel and the store; reconciliation holds it exclusively, so it never sees a
    /// half-made object (a link recorded but not yet pinned, a pin not yet recorded)
    /// and takes it for a crash's leftover.
    gate: RwLock<()>,
    images: ImagePuller,
    /// Program id -> declares XDP multi-buffer support (from its ELF section).
    frags: Mutex<HashMap<u32, bool>>,
    /// Bytecode held in memory by loads in progress.
    bytecode_budget: Arc<access::Budget>,
}

/// One key's lock from [`Manager::lock`]; derefs to the mutex. Dropping the last
/// handle removes the key from the table.
struct KeyLock<'a> {
    table: &'a Mutex<HashMap<String, Arc<Mutex<()>>>>,
    key: String,
    lock: Arc<Mutex<()>>,
}

impl std::ops::Deref for KeyLock<'_> {
    type Target = Mutex<()>;
    fn deref(&self) -> &Mutex<()> {
        &self.lock
    }
}

impl Drop for KeyLock<'_> {
    fn drop(&mut self) {
        let mut m = match self.table.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        // The table's copy and ours: nobody else holds or waits for it.
        if Arc::strong_count(&self.lock) == 2 {
            m.remove(&self.key);
        }
    }
}

/// The image service and the runtime its network work runs on (manager calls are
/// synchronous; pulls are async underneath).
struct ImagePuller {
    /// Err when the cache could not be opened: the daemon still serves everything else,
    /// and image requests get the reason.
    service: std::result::Result<ImageService, Error>,
    rt: Option<tokio::runtime::Runtime>,
}

impl ImagePuller {
    fn new(c: &crate::config::ImagesConfig) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("bpfman-images")
            .enable_all()
            .build()
            .map_err(|e| Error::internal(format!("starting the image runtime: {e}")))?;
        let service = ImageService::open(c);
        if let Err(e) = &service {
            warn!("image support is off: {e}");
        }
        Ok(Self {
            service,
            rt: Some(rt),
        })
    }

    fn service(&self) -> Result<&ImageService> {
        self.service.as_ref().map_err(|e| {
            Error::new(
                ErrorKind::FailedPrecondition,
                format!("image support is off on this daemon: {e}; fix [images] cache_dir"),
            )
        })
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> Result<F::Output> {
        let rt = self
            .rt
            .as_ref()
            .ok_or_else(|| Error::internal("the image runtime is gone"))?;
        Ok(rt.block_on(f))
    }
}

impl Drop for ImagePuller {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn check_elf(bytes: &[u8], path: &str) -> Result<()> {
    if bytes.len() < 4 || &bytes[..4] != b"\x7fELF" {
        return Err(Error::invalid(format!(
            "{path} is not an ELF object file; build eBPF programs with \
             `clang -target bpf -c` and give the .o"
        )));
    }
    Ok(())
}

/// A rule with `require_signature` admits only images a trusted key verified.
fn require_signed(d: &Decision, rec: &ImageRecord) -> Result<()> {
    if d.require_signature && rec.signer.is_none() {
        return Err(Error::denied(format!(
            "policy rule '{}' requires signed images, and {} is not verified by a trusted \
             key ({}); sign it and configure its key in [[images.signatures.trusted_keys]]",
            d.rule.as_deref().unwrap_or("?"),
            rec.reference,
            rec.signature
        )));
    }
    Ok(())
}

fn validate_hook(kind: &str, h: &NetHook, valid_proceed: &[(&str, i32)]) -> Result<()> {
    if h.iface.is_empty() {
        return Err(Error::invalid(format!(
            "{kind} attach needs an interface (--iface)"
        )));
    }
    if !(1..=1000).contains(&h.priority) {
        return Err(Error::invalid(format!(
            "priority {} is out of range: use 1 (runs first) to 1000",
            h.priority
        )));
    }
    for code in &h.proceed_on {
        if !valid_proceed.iter().any(|(_, c)| c == code) {
            let names: Vec<&str> = valid_proceed.iter().map(|(n, _)| *n).collect();
            return Err(Error::invalid(format!(
                "proceed-on value {code} is not a {kind} return code; use {}",
                names.join(", ")
            )));
        }
    }
    Ok(())
}

impl Manager {
    /// Opens the store, probes the kernel, and reconciles the two.
    pub fn open(paths: Paths, config: Config) -> Result<(Self, ReconcileReport)> {
        if let Some(dir) = paths.database.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::internal(format!("creating {}: {e}", dir.display())))?;
        }
        let store = Store::open(&paths.database)?;
        let kernel = Kernel::new(&paths.bpffs)?;
        let features = crate::kernel::probe::probe(&paths.bpffs);
        let audit = open_audit(&config.policy)?;
        let images = config.images.clone();
        let bytecode_budget = access::Budget::new(config.daemon.max_bytecode_bytes_in_flight);
        let m = Self {
            policy: RwLock::new(Arc::new(Policy::new(config.policy.clone()))),
            audit: Arc::new(AuditLog {
                file: Mutex::new(audit),
            }),
            reservations: Mutex::new(Reservations::default()),
            pulls: Mutex::new(HashMap::new()),
            config,
            store,
            kernel,
            features,
            paths,
            locks: Mutex::new(HashMap::new()),
            lingering: Mutex::new(HashMap::new()),
            gate: RwLock::new(()),
            images: ImagePuller::new(&images)?,
            frags: Mutex::new(HashMap::new()),
            bytecode_budget,
        };
        let report = m.reconcile_with(true)?;
        Ok((m, report))
    }

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

    fn reload_policy(&self, p: PolicyConfig) -> Result<()> {
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

    fn policy(&self) -> Arc<Policy> {
        match self.policy.read() {
            Ok(p) => p.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Whether any policy rule names this caller (root always): callers no rule names
    /// are refused by the API layer before their requests are read.
    pub fn knows(&self, caller: Caller) -> bool {
        caller.uid == 0
            || self
                .policy()
                .names(&Subject::resolve(caller.uid, caller.gid))
    }

    /// An audit line's fields; `verdict` is (rule, allowed, reason).
    fn audit_entry(
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
    fn precheck(&self, caller: Caller, action: Action, what: &str) -> Result<Subject> {
        crate::request::check()?;
        let who = Subject::resolve(caller.uid, caller.gid);
        if let Err(reason) = self.policy().may(&who, action) {
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
    fn decide(
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
    fn authorize_read(&self, caller: Caller, action: Action) -> Result<()> {
        self.precheck(caller, action, action.as_str()).map(|_| ())
    }

    /// Reserves room for `programs` new programs and `links` new links of `uid`,
    /// checking the daemon's limits; returns what the caller owns (recorded and being
    /// created) before this reservation.
    fn reserve(&self, uid: u32, programs: u32, links: u32) -> Result<((u32, u32), Reserved<'_>)> {
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

    /// Entries in the manager's per-key tables (for tests and metrics): each goes back
    /// to its idle size when nothing is in progress (`frags` holds one fact per loaded
    /// XDP program that a dispatcher asked about, `lingering` programs that outlived
    /// their Unload and are still in the kernel).
    pub fn table_sizes(&self) -> BTreeMap<&'static str, usize> {
        fn size<T>(m: &Mutex<T>, f: impl Fn(&T) -> usize) -> usize {
            f(&m.lock().unwrap_or_else(|p| p.into_inner()))
        }
        BTreeMap::from([
            ("locks", size(&self.locks, |m| m.len())),
            (
                "reservations",
                size(&self.reservations, |r| r.programs.len() + r.links.len()),
            ),
            ("pulls_per_uid", size(&self.pulls, |m| m.len())),
            ("frags", size(&self.frags, |m| m.len())),
            ("lingering", self.lingering(None) as usize),
            (
                "image_pulls_in_flight",
                self.images
                    .service()
                    .map(|s| s.pulls_in_flight())
                    .unwrap_or(0),
            ),
        ])
    }

    fn file_limits(&self) -> Limits {
        Limits {
            max_bytes: self.config.daemon.max_bytecode_bytes,
            deadline: Duration::from_secs(self.config.daemon.file_open_timeout_secs),
        }
    }

    pub fn features(&self) -> &Features {
        &self.features
    }

    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    pub fn counts(&self) -> Result<(u64, u64)> {
        self.store.counts()
    }

    /// Shared hold of the reconciliation gate, for the length of one mutation. A request
    /// whose caller gave up while it waited stops here.
    fn gate_shared(&self) -> Result<std::sync::RwLockReadGuard<'_, ()>> {
        let g = self
            .gate
            .read()
            .map_err(|_| Error::internal("lock poisoned"))?;
        crate::request::check()?;
        Ok(g)
    }

    /// The lock of one key (a program, a hook, a map directory); its entry goes when the
    /// last holder lets go, so the table stays the size of what is in use.
    fn lock(&self, key: String) -> KeyLock<'_> {
        let mut m = match self.locks.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let lock = m.entry(key.clone()).or_default().clone();
        KeyLock {
            table: &self.locks,
            key,
            lock,
        }
    }

    /// Programs of `uid` that outlived their Unload and are still in the kernel (the
    /// ones gone since are forgotten).
    fn lingering(&self, uid: Option<u32>) -> u32 {
        let mut m = match self.lingering.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        for ids in m.values_mut() {
            ids.retain(|id| self.kernel.exists(crate::kernel::ids::Object::Program, *id));
        }
        m.retain(|_, ids| !ids.is_empty());
        match uid {
            Some(uid) => m.get(&uid).map(|v| v.len() as u32).unwrap_or(0),
            None => m.values().map(|v| v.len() as u32).sum(),
        }
    }

    fn require(&self, feature: &str, what: &str) -> Result<()> {
        if self.features.has(feature) {
            Ok(())
        } else {
            Err(Error::unsupported(format!(
                "{what} needs the kernel feature '{feature}', which this kernel lacks: {}",
                self.features.detail(feature)
            )))
        }
    }

    /// Loads programs from one object. Nothing is attached.
    pub fn load(&self, caller: Caller, req: LoadRequest) -> Result<Vec<Program>> {
        let who = self.precheck(caller, Action::Load, "load")?;
        let bytecode = req
            .bytecode
            .clone()
            .ok_or_else(|| Error::invalid("load needs bytecode: a file path or an image"))?;
        // Policy judges images by their normalised reference, and files by a path with
        // no '.' or '..' in it.
        let bytecode = match bytecode {
            Bytecode::Image {
                url,
                pull_policy,
                digest,
            } => Bytecode::Image {
                url: ImageService::normalise(&url)?.1,
                pull_policy,
                digest,
            },
            Bytecode::File(f) => {
                access::check_path(&f, "bytecode path")?;
                Bytecode::File(f)
            }
        };
        if req.programs.is_empty() {
            return Err(Error::invalid(
                "load names no programs: give --programs TYPE:FUNCTION at least once",
            ));
        }
        let mut seen = HashSet::with_capacity(req.programs.len());
        for p in &req.programs {
            if p.name.is_empty() {
                return Err(Error::invalid("a program's function name is empty"));
            }
            check_name(&p.name, "a function name")?;
            if !seen.insert(p.name.as_str()) {
                return Err(Error::invalid(format!(
                    "function '{}' is named twice",
                    p.name
                )));
            }
            if let Some(f) = &p.attach_fn {
                check_name(f, "a kernel function name")?;
            }
            if p.kind.needs_attach_fn() && p.attach_fn.as_deref().unwrap_or("").is_empty() {
                let (what, arg) = p.kind.attach_fn_words();
                return Err(Error::invalid(format!(
                    "{} program '{}' needs its {what}: --programs {}:{}:{arg}",
                    p.kind, p.name, p.kind, p.name
                )));
            }
        }
        if req.global_data.len() > MAX_GLOBALS {
            return Err(Error::invalid(format!(
                "{} globals given; at most {MAX_GLOBALS}",
                req.global_data.len()
            )));
        }
        let mut global_bytes = 0;
        for (k, v) in &req.global_data {
            if k.is_empty() || v.is_empty() {
                return Err(Error::invalid(format!(
                    "global '{}' needs a name and at least one byte (NAME=HEX)",
                    truncate(k, 64)
                )));
            }
            check_name(k, "a global's name")?;
            global_bytes += v.len();
        }
        if global_bytes > MAX_GLOBAL_BYTES {
            return Err(Error::invalid(format!(
                "global data is {global_bytes} bytes; at most {MAX_GLOBAL_BYTES}"
            )));
        }
        check_metadata(&req.metadata, "the load")?;
        let n = req.programs.len() as u32;
        let ((owned, _), reservation) = self.reserve(caller.uid, n, 0)?;
        // Sharing maps reads and writes the owner's maps: the caller must own it (and
        // the program whose maps it uses in turn).
        let foreign_map_owner = match req.map_owner_id {
            Some(id) if caller.uid != 0 => {
                let p = self.managed(id)?;
                let root = match p.map_owner_id {
                    Some(r) => self.managed(r)?,
                    None => p.clone(),
                };
                (p.owner.uid != caller.uid || root.owner.uid != caller.uid).then_some(id)
            }
            _ => None,
        };
        let kinds: Vec<ProgramKind> = req.programs.iter().map(|p| p.kind).collect();
        let attach_fns: Vec<(ProgramKind, &str)> = req
            .programs
            .iter()
            .filter_map(|p| p.attach_fn.as_deref().map(|f| (p.kind, f)))
            .collect();
        let names: Vec<String> = req
            .programs
            .iter()
            .take(16)
            .map(|p| format!("{}:{}", p.kind, p.name))
            .collect();
        let what = format!(
            "load {}{} from {bytecode:?}",
            names.join(" "),
            if req.programs.len() > 16 {
                format!(" (and {} more)", req.programs.len() - 16)
            } else {
                String::new()
            }
        );
        let (decision, ticket) = self.decide(
            caller,
            &who,
            &Request::Load {
                bytecode: &bytecode,
                kinds,
                attach_fns,
                owned_programs: owned,
                new_programs: n,
                foreign_map_owner,
                reserved_metadata: reserved_keys(&req.metadata),
            },
            &what,
        )?;
        let r = self.load_allowed(caller, &who, &decision, &req, bytecode);
        drop(reservation);
        ticket.finish(&r);
        r
    }

    fn load_allowed(
        &self,
        caller: Caller,
        who: &Subject,
        decision: &Decision,
        req: &LoadRequest,
        bytecode: Bytecode,
    ) -> Result<Vec<Program>> {
        // What this kernel cannot load is said once the caller is allowed to ask.
        for p in &req.programs {
            if let Some(feature) = p.kind.feature() {
                self.require(feature, &format!("loading {} program '{}'", p.kind, p.name))?;
            }
        }
        let (bytes, bytecode) = match &bytecode {
            Bytecode::File(f) => {
                let path = Path::new(f);
                let confine = file_confine(decision.grant.as_ref(), path)?;
                let bytes = access::read_budgeted(
                    &identity(who, caller),
                    path,
                    &confine,
                    self.file_limits(),
                    &self.bytecode_budget,
                )
                .map_err(|e| e.context("bytecode file"))?;
                check_elf(&bytes, f)?;
                (bytes, bytecode.clone())
            }
            Bytecode::Image {
                url, pull_policy, ..
            } => {
                let creds = Credentials {
                    username: req.registry_auth.as_ref().map(|a| a.0.clone()),
                    password: req.registry_auth.as_ref().map(|a| a.1.clone()),
                };
                let rec = self.pull_counted(
                    caller,
                    url,
                    PullPolicy::from_i32(*pull_policy)?,
                    &creds,
                    &mut |_| {},
                )?;
                require_signed(decision, &rec)?;
                for p in &req.programs {
                    if !rec.labels.programs.is_empty() && !rec.labels.programs.contains_key(&p.name)
                    {
                        return Err(Error::invalid(format!(
                            "image {} has no program '{}' (it has: {})",
                            rec.reference,
                            p.name,
                            rec.labels
                                .programs
                                .iter()
                                .map(|(f, t)| format!("{t}:{f}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )));
                    }
                }
                let bytes = self.images.service()?.bytecode(&rec)?;
                let held = self.bytecode_budget.take(
                    bytes.len() as u64,
                    &format!("the bytecode of {}", rec.reference),
                )?;
                (
                    access::Bytes::new(bytes, held),
                    Bytecode::Image {
                        url: rec.reference.clone(),
                        pull_policy: *pull_policy,
                        digest: Some(rec.digest.clone()),
                    },
                )
            }
        };
        // Parse the object ourselves first: a malformed one gets a clear error here
        // rather than reaching the kernel loader.
        crate::image::format::inspect_elf(&bytes, "the bytecode")?;
        let _gate = self.gate_shared()?;

        // Map sharing: use the maps of the owner (or of the owner's own owner).
        let owner = match req.map_owner_id {
            None => None,
            Some(id) => {
                let p = self.store.program(id)?.ok_or_else(|| {
                    Error::not_found(format!(
                        "map owner program {id} is not loaded by bpfman (see `bpfman list programs`)"
                    ))
                })?;
                let root = match p.map_owner_id {
                    Some(root) => self.store.program(root)?.ok_or_else(|| {
                        Error::internal(format!("map owner {root} of {id} is missing"))
                    })?,
                    None => p,
                };
                // Checked again now that nothing can change under us (the owner's map
                // directory is locked until this load's rows are in: an unload of the
                // owner checks for users under the same lock).
                if caller.uid != 0
                    && root.owner.uid != caller.uid
                    && !decision.grant.as_ref().is_some_and(|g| g.manage_others)
                {
                    return Err(Error::denied(format!(
                        "map owner program {} belongs to another user",
                        root.id
                    )));
                }
                Some(root)
            }
        };
        let maps_lock = owner
            .as_ref()
            .map(|o| self.lock(format!("maps/{}", o.map_pin_path)));
        let _maps_guard = match &maps_lock {
            Some(l) => Some(l.lock().map_err(|_| Error::internal("lock poisoned"))?),
            None => None,
        };
        let shared_dir = owner.as_ref().map(|o| PathBuf::from(&o.map_pin_path));
        let plan = LoadPlan {
            programs: req.programs.clone(),
            global_data: req.global_data.clone(),
            shared_maps: owner
                .as_ref()
                .zip(shared_dir)
                .map(|(o, d)| (d, o.maps.clone())),
        };
        let loaded = self.kernel.load(bytes, plan)?;
        fault::point("load.pinned");

        let created_at = now_rfc3339();
        let programs: Vec<Program> = req
            .programs
            .iter()
            .zip(&loaded.programs)
            .map(|(spec, k)| Program {
                id: k.id,
                name: spec.name.clone(),
                kind: k.kind,
                bytecode: bytecode.clone(),
                attach_fn: spec.attach_fn.clone(),
                global_data: req.global_data.clone(),
                metadata: req.metadata.clone(),
                // Reported only when the caller asked for it; programs loaded together
                // are peers that share their maps (as upstream).
                map_owner_id: owner.as_ref().map(|o| o.id),
                map_pin_path: loaded.map_dir.display().to_string(),
                maps: loaded.maps.clone(),
                pin_path: k.pin_path.display().to_string(),
                owner: caller,
                created_at: created_at.clone(),
                tag: k.tag.clone(),
            })
            .collect();
        if let Err(e) = self.store.insert_programs(&programs) {
            for p in &loaded.programs {
                let _ = self.kernel.unpin_program(&p.pin_path);
            }
            if owner.is_none() {
                self.kernel.remove_maps(&loaded.map_dir);
            }
            return Err(e);
        }
        for p in &programs {
            info!(id = p.id, name = %p.name, kind = %p.kind, uid = caller.uid, "loaded");
        }
        Ok(programs)
    }

    /// Makes an image available in the cache (the caller must be allowed to pull it).
    pub fn pull_image(
        &self,
        caller: Caller,
        url: &str,
        policy: PullPolicy,
        creds: &Credentials,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<ImageRecord> {
        let who = self.precheck(caller, Action::Pull, "pull")?;
        let (_, name) = ImageService::normalise(url)?;
        let what = format!("pull {name}");
        let (d, ticket) = self.decide(caller, &who, &Request::Pull { image: &name }, &what)?;
        let r = self
            .pull_counted(caller, &name, policy, creds, progress)
            .and_then(|rec| require_signed(&d, &rec).map(|()| rec));
        ticket.finish(&r);
        r
    }

    /// A pull on behalf of `caller`: at most `[images] max_pulls_per_uid` at once per
    /// caller (root is not counted), so a slow registry holds only its own caller.
    fn pull_counted(
        &self,
        caller: Caller,
        url: &str,
        policy: PullPolicy,
        creds: &Credentials,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<ImageRecord> {
        let _slot = if caller.uid != 0 {
            let mut m = self
                .pulls
                .lock()
                .map_err(|_| Error::internal("lock poisoned"))?;
            let n = m.entry(caller.uid).or_default();
            let max = self.config.images.max_pulls_per_uid;
            if *n >= max {
                if *n == 0 {
                    m.remove(&caller.uid);
                }
                return Err(Error::exhausted(format!(
                    "uid {} already has {max} pulls in progress ([images] max_pulls_per_uid); \
                     wait for them",
                    caller.uid
                )));
            }
            *n += 1;
            Some(PullSlot {
                m: &self.pulls,
                uid: caller.uid,
            })
        } else {
            None
        };
        self.pull_cached(url, policy, creds, progress)
    }

    /// A pull with the daemon's deadline (`[images] pull_timeout_secs`): a registry
    /// that trickles bytes is abandoned.
    fn pull_cached(
        &self,
        url: &str,
        policy: PullPolicy,
        creds: &Credentials,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<ImageRecord> {
        let limit = Duration::from_secs(self.config.images.pull_timeout_secs);
        let pull = self.images.service()?.pull(url, policy, creds, progress);
        match self
            .images
            .block_on(async { tokio::time::timeout(limit, pull).await })?
        {
            Ok(r) => r,
            Err(_) => Err(Error::precondition(format!(
                "pulling {url} took longer than {} s ([images] pull_timeout_secs); the \
                 registry is too slow or stalled; nothing was cached",
                limit.as_secs()
            ))),
        }
    }

    /// Cached images.
    pub fn images(&self, caller: Caller) -> Result<Vec<ImageRecord>> {
        self.authorize_read(caller, Action::List)?;
        self.images.service()?.list()
    }

    /// One cached image, by reference.
    pub fn image(&self, caller: Caller, url: &str) -> Result<ImageRecord> {
        self.authorize_read(caller, Action::Get)?;
        self.images.service()?.cached(url)?.ok_or_else(|| {
            Error::not_found(format!(
                "image {url} is not in the cache (pull it with `bpfman image pull {url}`)"
            ))
        })
    }

    /// Removes cached images (root only: the cache is shared). Loaded programs keep
    /// running; they hold their own copy in the kernel.
    pub fn remove_image(&self, caller: Caller, what: &str) -> Result<Vec<ImageRecord>> {
        if caller.uid != 0 {
            return Err(Error::denied(
                "removing cached images is for root only (the cache is shared by all callers)",
            ));
        }
        self.images.service()?.remove(what)
    }

    /// Applies the signature rules of a new config.
    pub fn reload_images(&self, c: &crate::config::ImagesConfig) -> Result<()> {
        let p = SignaturePolicy::from_config(&c.signatures)?;
        if let Ok(s) = &self.images.service {
            s.set_signature_policy(p);
        }
        Ok(())
    }

    /// Unloads a program: detaches its links, then removes it (and its maps, when it
    /// owns them). A program whose maps others use is refused until they are unloaded.
    pub fn unload(&self, caller: Caller, id: u32) -> Result<()> {
        let what = format!("unload program {id}");
        let who = self.precheck(caller, Action::Unload, &what)?;
        let p = self.managed(id)?;
        let (_, ticket) = self
            .decide(
                caller,
                &who,
                &Request::Unload {
                    own: p.owner.uid == caller.uid,
                },
                &what,
            )
            .map_err(|e| e.context(format!("program {id}")))?;
        let r = self.unload_allowed(id, p.owner);
        // Done when it returns: the links' and the program's ids are gone. Waited for
        // with no lock or gate held, so one slow teardown holds only its own caller.
        let r = r.map(|links| {
            for l in links {
                self.kernel.wait_gone(crate::kernel::ids::Object::Link, l);
            }
            if !self
                .kernel
                .wait_gone(crate::kernel::ids::Object::Program, id)
            {
                warn!(
                    id,
                    uid = p.owner.uid,
                    "program outlived its Unload: something else holds it (a bpf_timer in \
                     its maps, a process's fd); it counts against its owner's max_programs \
                     until the kernel lets it go"
                );
                let mut m = match self.lingering.lock() {
                    Ok(m) => m,
                    Err(e) => e.into_inner(),
                };
                m.entry(p.owner.uid).or_default().push(id);
            }
        });
        ticket.finish(&r);
        r
    }

    /// Unloads under the locks; returns the kernel link ids to wait for.
    fn unload_allowed(&self, id: u32, decided_owner: Caller) -> Result<Vec<u32>> {
        let _gate = self.gate_shared()?;
        let lock = self.lock(format!("prog/{id}"));
        let _g = lock.lock().map_err(|_| Error::internal("lock poisoned"))?;
        crate::request::check()?;
        let p = self.managed(id)?;
        if p.owner != decided_owner {
            return Err(Error::precondition(format!(
                "program {id} changed while the request was decided; try again"
            )));
        }
        // The map directory is locked from the users check to the removal: a load that
        // names this program as its map owner waits, or is refused once it is gone.
        let maps = self.lock(format!("maps/{}", p.map_pin_path));
        let _m = maps.lock().map_err(|_| Error::internal("lock poisoned"))?;
        let users = self.store.map_users(id)?;
        if !users.is_empty() {
            let list: Vec<String> = users.iter().map(|u| u.to_string()).collect();
            return Err(Error::precondition(format!(
                "program {id} owns maps that programs {} use; unload those first",
                list.join(", ")
            )));
        }
        let mut gone = Vec::new();
        for l in self.store.links(Some(id))? {
            gone.extend(self.detach_locked(&l)?);
        }
        self.kernel.unpin_program(Path::new(&p.pin_path))?;
        fault::point("unload.unpinned");
        // The maps go with the last program that uses them (peers loaded together share
        // one directory); a crash before this leaves a directory no record names, which
        // reconciliation removes.
        self.store.delete_program(id)?;
        if let Ok(mut f) = self.frags.lock() {
            f.remove(&id);
        }
        if self
            .store
            .programs_with_map_dir(&p.map_pin_path)?
            .is_empty()
        {
            self.kernel.remove_maps(Path::new(&p.map_pin_path));
        }
        info!(id, "unloaded");
        Ok(gone)
    }

    fn managed(&self, id: u32) -> Result<Program> {
        self.store.program(id)?.ok_or_else(|| {
            Error::not_found(format!(
                "program {id} is not loaded by bpfman (see `bpfman list programs`)"
            ))
        })
    }

    /// Attaches a loaded program; returns the new link.
    pub fn attach(&self, caller: Caller, program_id: u32, spec: AttachSpec) -> Result<Link> {
        self.attach_with_metadata(caller, program_id, spec, BTreeMap::new())
    }

    /// Attaches a loaded program, recording `metadata` on the link.
    pub fn attach_with_metadata(
        &self,
        caller: Caller,
        program_id: u32,
        mut spec: AttachSpec,
        metadata: BTreeMap<String, String>,
    ) -> Result<Link> {
        // Default proceed-on, as upstream: XDP pass; TC ok and pipe; both dispatcher_return.
        match &mut spec {
            AttachSpec::Xdp(h) if h.proceed_on.is_empty() => h.proceed_on = vec![2, 31],
            AttachSpec::Tc(h) if h.proceed_on.is_empty() => h.proceed_on = vec![0, 3, 30],
            _ => {}
        }
        let who = self.precheck(caller, Action::Attach, "attach")?;
        let p = self.managed(program_id)?;
        self.validate_attach(&p, &spec)?;
        check_metadata(&metadata, "the attach")?;
        // A process the probe is scoped to or resolved in: held by a pidfd from here on.
        let process = match &spec {
            AttachSpec::Uprobe {
                pid, container_pid, ..
            } => container_pid.or(*pid).map(ProcessRef::open).transpose()?,
            _ => None,
        };
        let foreign_process = match &process {
            Some(pr) if caller.uid != 0 && !pr.belongs_to(caller.uid)? => Some(pr.pid),
            _ => None,
        };
        let ((_, owned_links), reservation) = self.reserve(caller.uid, 0, 1)?;
        let what = format!(
            "attach program {program_id} {} {}",
            spec.name(),
            truncate(&spec.target(), 256)
        );
        let (decision, ticket) = self.decide(
            caller,
            &who,
            &Request::Attach {
                kind: p.kind,
                spec: &spec,
                owned_links,
                own_program: p.owner.uid == caller.uid,
                foreign_process,
                reserved_metadata: reserved_keys(&metadata),
            },
            &what,
        )?;
        let r = self.attach_allowed(caller, &who, &decision, p, spec, metadata, process);
        drop(reservation);
        ticket.finish(&r);
        r
    }

    /// Checks an attach request on its own (no state, no kernel): the program kind fits,
    /// the hook's values are in range, names and paths are well formed.
    fn validate_attach(&self, p: &Program, spec: &AttachSpec) -> Result<()> {
        let program_id = p.id;
        if !p.kind.accepts(spec) {
            return Err(Error::invalid(format!(
                "program {program_id} ('{}') is a {} program; it cannot be attached as {}",
                p.name,
                p.kind,
                spec.name()
            )));
        }
        match &spec {
            AttachSpec::Xdp(h) => validate_hook("xdp", h, XDP_PROCEED_ON)?,
            AttachSpec::Tc(h) => validate_hook("tc", h, TC_PROCEED_ON)?,
            AttachSpec::Tcx(h) => validate_hook("tcx", h, &[])?,
            AttachSpec::Tracepoint { tracepoint } => check_tracepoint(tracepoint)?,
            AttachSpec::Kprobe {
                fn_name,
                container_pid,
                ..
            } => {
                if fn_name.is_empty() {
                    return Err(Error::invalid("kprobe attach needs --fn-name"));
                }
                check_name(fn_name, "a kernel function name")?;
                if container_pid.is_some() {
                    return Err(Error::invalid(
                        "kprobes are kernel-wide; --container-pid does not apply to them",
                    ));
                }
            }
            AttachSpec::Uprobe {
                target,
                fn_name,
                offset,
                ..
            } => {
                if target.is_empty() {
                    return Err(Error::invalid(
                        "uprobe attach needs --target PATH_OR_LIBRARY",
                    ));
                }
                if fn_name.as_deref().unwrap_or("").is_empty() && *offset == 0 {
                    return Err(Error::invalid("uprobe attach needs --fn-name or --offset"));
                }
                if let Some(f) = fn_name {
                    check_name(f, "a symbol name")?;
                }
                // A bare library name is resolved through ld.so.cache (root only: see
                // attach_allowed); anything else is a checked absolute path.
                if target.contains('/') {
                    access::check_path(target, "uprobe target")?;
                } else {
                    check_name(target, "a uprobe target")?;
                }
            }
            AttachSpec::Fentry | AttachSpec::Fexit | AttachSpec::Lsm => {}
        }
        if let Some(h) = spec.net_hook() {
            if h.iface.len() >= libc::IF_NAMESIZE || h.iface.contains('/') {
                return Err(Error::invalid(format!(
                    "'{}' is not an interface name (at most {} bytes, no '/')",
                    truncate(&h.iface, 64),
                    libc::IF_NAMESIZE - 1
                )));
            }
            if let Some(ns) = &h.netns {
                access::check_path(ns, "netns path")?;
            }
        }
        Ok(())
    }

    /// Opens what a uprobe names as the caller and confined to the grant, and returns
    /// the spec the kernel attaches (the opened file at `/proc/self/fd/N` and the
    /// symbol resolved in it, so what was checked is what is probed) with the file.
    fn open_uprobe_target(
        &self,
        caller: Caller,
        who: &Subject,
        decision: &Decision,
        spec: &AttachSpec,
        process: Option<&ProcessRef>,
    ) -> Result<Option<(AttachSpec, access::Opened, String)>> {
        let AttachSpec::Uprobe {
            fn_name,
            offset,
            target,
            pid,
            container_pid,
        } = spec
        else {
            return Ok(None);
        };
        if !target.contains('/') {
            if caller.uid != 0 {
                return Err(Error::invalid(format!(
                    "uprobe target '{target}' is a library name; give the absolute path of \
                     the binary or library (e.g. /usr/lib/x86_64-linux-gnu/libc.so.6): names \
                     resolved through ld.so.cache are for root only"
                )));
            }
            if container_pid.is_some() {
                return Err(Error::invalid(
                    "with --container-pid, give the target's absolute path inside the container",
                ));
            }
            return Ok(None);
        }
        let path = Path::new(target);
        let granted =
            match decision
                .grant
                .as_ref()
                .and_then(|g| g.uprobe_targets.as_ref())
            {
                Some(t) => Some(crate::policy::uprobe_dir(t, target).ok_or_else(|| {
                    Error::denied(format!("uprobe target {target} is not granted"))
                })?),
                None => None,
            };
        let confine = match (container_pid, process) {
            (Some(_), Some(pr)) => {
                if caller.uid != 0 && !pr.mounts_owned_by_init_userns()? {
                    return Err(Error::denied(format!(
                        "process {}'s mount namespace belongs to a user namespace (a rootless \
                         or user-namespaced container), where unprivileged users arrange the \
                         files; only root may probe through it",
                        pr.pid
                    )));
                }
                let root = PathBuf::from(format!("/proc/{}/root", pr.pid));
                match granted {
                    Some(dir) => Confine::BeneathInRoot { root, dir },
                    None => Confine::InRoot(root),
                }
            }
            _ => match granted {
                Some(dir) => Confine::Beneath(dir),
                None => Confine::Anywhere,
            },
        };
        let limits = Limits {
            max_bytes: u64::MAX,
            deadline: Duration::from_secs(self.config.daemon.file_open_timeout_secs),
        };
        let opened = access::open(&identity(who, caller), path, &confine, limits)
            .map_err(|e| e.context("uprobe target"))?;
        let resolved = match fn_name.as_deref().filter(|f| !f.is_empty()) {
            Some(sym) => crate::kernel::uprobe_symbol_offset(&opened.file, sym)
                .map_err(|e| e.context(format!("uprobe target {target}")))?
                .checked_add(*offset)
                .ok_or_else(|| Error::invalid("uprobe offset overflows"))?,
            None => *offset,
        };
        let probed = format!(
            "{} ({}){}",
            target,
            opened.identity(),
            match container_pid {
                Some(c) => format!(" in the mount namespace of pid {c}"),
                None => String::new(),
            }
        );
        let kernel_spec = AttachSpec::Uprobe {
            fn_name: None,
            offset: resolved,
            target: opened.fd_path().display().to_string(),
            pid: *pid,
            container_pid: None,
        };
        Ok(Some((kernel_spec, opened, probed)))
    }

    #[allow(clippy::too_many_arguments)]
    fn attach_allowed(
        &self,
        caller: Caller,
        who: &Subject,
        decision: &Decision,
        p: Program,
        spec: AttachSpec,
        mut metadata: BTreeMap<String, String>,
        process: Option<ProcessRef>,
    ) -> Result<Link> {
        let program_id = p.id;
        // Files first, with no lock held: a slow file holds only this request.
        let uprobe = self.open_uprobe_target(caller, who, decision, &spec, process.as_ref())?;
        if let Some((_, _, probed)) = &uprobe {
            metadata.insert("bpfman.io/probed".into(), probed.clone());
        }
        let _gate = self.gate_shared()?;
        let plock = self.lock(format!("prog/{program_id}"));
        let _pg = plock.lock().map_err(|_| Error::internal("lock poisoned"))?;
        crate::request::check()?;
        let p2 = self.managed(program_id)?;
        if p2.owner != p.owner {
            return Err(Error::precondition(format!(
                "program {program_id} changed while the request was decided; try again"
            )));
        }
        let kernel_spec = uprobe.as_ref().map(|(k, _, _)| k.clone());
        let link = self.attach_locked(caller, &p2, spec, kernel_spec, metadata)?;
        // The probed process must still be the one checked (not a reused pid).
        if let Some(pr) = &process
            && let Err(e) = pr.alive()
        {
            let _ = self.detach_locked(&link);
            return Err(e);
        }
        Ok(link)
    }

    fn attach_locked(
        &self,
        caller: Caller,
        p: &Program,
        spec: AttachSpec,
        kernel_spec: Option<AttachSpec>,
        metadata: BTreeMap<String, String>,
    ) -> Result<Link> {
        let program_id = p.id;
        match &spec {
            AttachSpec::Tcx(_) => self.require("tcx", "attaching tcx programs")?,
            AttachSpec::Kprobe { .. } => self.require("kprobe", "attaching kprobes")?,
            _ => {}
        }

        // Network hooks: resolve the interface and lock the hook.
        let (hook, ifindex) = match spec.net_hook() {
            Some(h) => {
                let ifindex = self.kernel.check_interface(h)?;
                let ns = netns_id(h.netns.as_deref())?;
                (hook_key(&spec, Some(ifindex), ns), Some(ifindex))
            }
            None => (None, None),
        };
        let hlock = hook.as_ref().map(|k| self.lock(format!("hook/{k}")));
        let _hg = match &hlock {
            Some(l) => Some(l.lock().map_err(|_| Error::internal("lock poisoned"))?),
            None => None,
        };
        let on_hook = match &hook {
            Some(k) => self.store.links_on_hook(k)?,
            None => Vec::new(),
        };
        let mut tcx_anchor = None;
        let mut position = 0;
        if let (Some(h), Some(kind)) = (spec.net_hook(), self.dispatch_kind(&spec)) {
            let hook = hook
                .clone()
                .ok_or_else(|| Error::internal("network attach without a hook key"))?;
            let on_hook = on_hook
                .into_iter()
                .filter(|l| self.dispatch_kind(&l.spec) == Some(kind))
                .collect();
            return self.attach_dispatched(
                caller,
                p,
                spec.clone(),
                h,
                hook,
                ifindex,
                on_hook,
                metadata,
                kind,
            );
        }
        match &spec {
            AttachSpec::Xdp(h) => {
                if let Some(l) = on_hook.first() {
                    return Err(Error::exists(format!(
                        "interface {} already has XDP program {} attached (link {}); several XDP \
                         programs on one interface need the XDP dispatcher, which needs the \
                         kernel feature 'freplace' that this kernel lacks ({}); detach it first",
                        h.iface,
                        l.program_id,
                        l.id,
                        self.features.detail("freplace")
                    )));
                }
            }
            AttachSpec::Tc(h) | AttachSpec::Tcx(h) => {
                if on_hook.iter().any(|l| l.program_id == program_id) {
                    return Err(Error::exists(format!(
                        "program {program_id} is already attached to {} {}",
                        h.iface,
                        h.direction.map(|d| d.as_str()).unwrap_or("ingress")
                    )));
                }
                // Lower priority runs first; equal priorities in attach order. A TC
                // dispatcher's TCX link (tc programs on a kernel with freplace) stays
                // after every tcx program, as classic TC runs after TCX.
                let prio = |l: &Link| l.spec.net_hook().map(|h| h.priority).unwrap_or(1000);
                let mut ordered: Vec<&Link> = on_hook
                    .iter()
                    .filter(|l| self.dispatch_kind(&l.spec).is_none())
                    .collect();
                ordered.sort_by_key(|l| (prio(l), l.id));
                let before = ordered.iter().position(|l| prio(l) > h.priority);
                position = before.unwrap_or(ordered.len()) as i32;
                let dispatcher_link = match &hook {
                    Some(k) => self
                        .store
                        .dispatcher(k)?
                        .filter(|d| TcFilter::decode(&d.link_pin).is_none())
                        .and_then(|d| self.kernel.link_id(Path::new(&d.link_pin))),
                    None => None,
                };
                tcx_anchor = match (before, ordered.last(), dispatcher_link) {
                    (Some(i), _, _) => Some(TcxAnchor::Before(ordered[i].program_id)),
                    (None, Some(l), _) => Some(TcxAnchor::After(l.program_id)),
                    (None, None, Some(d)) => Some(TcxAnchor::BeforeLink(d)),
                    (None, None, None) => None,
                };
            }
            _ => {}
        }

        // Record intent, then touch the kernel, then record the result.
        let mut link = Link {
            id: 0,
            program_id,
            spec: spec.clone(),
            ifindex,
            kernel_link_id: 0,
            pin_path: String::new(),
            metadata,
            owner: caller,
            created_at: now_rfc3339(),
            position,
            hook: hook.clone(),
        };
        let id = self.store.insert_link(&link)?;
        fault::point("attach.intent");
        let pin = self.kernel.link_pin(id);
        let xdp_mode = spec.net_hook().and_then(|h| self.xdp_mode(&h.iface));
        let attached = match self.kernel.attach(
            p.kind,
            Path::new(&p.pin_path),
            kernel_spec.as_ref().unwrap_or(&spec),
            &pin,
            tcx_anchor,
            xdp_mode,
        ) {
            Ok(a) => a,
            Err(e) => {
                let _ = self.store.delete_link(id);
                return Err(e);
            }
        };
        fault::point("attach.pinned");
        let pin_s = pin.display().to_string();
        if let Err(e) = self
            .store
            .complete_link(id, &pin_s, attached.kernel_link_id)
        {
            let _ = self.kernel.detach(&pin);
            let _ = self.store.delete_link(id);
            return Err(e);
        }
        link.id = id;
        link.pin_path = pin_s;
        link.kernel_link_id = attached.kernel_link_id;
        info!(link = id, program = program_id, target = %spec.target(), kind = spec.name(), "attached");
        if let Some(k) = &hook {
            self.renumber(k)?;
            if let Some(l) = self.store.link(id)? {
                link.position = l.position;
            }
        }
        Ok(link)
    }

    /// Attaches an XDP program through the hook's dispatcher (built on first use):
    /// the program is loaded as an extension of a dispatcher slot, and every attach
    /// rebuilds the dispatcher and swaps it in atomically.
    #[allow(clippy::too_many_arguments)]
    fn attach_dispatched(
        &self,
        caller: Caller,
        p: &Program,
        spec: AttachSpec,
        h: &NetHook,
        hook: String,
        ifindex: Option<u32>,
        on_hook: Vec<Link>,
        metadata: BTreeMap<String, String>,
        kind: DispatchKind,
    ) -> Result<Link> {
        let what = match kind {
            DispatchKind::Xdp => h.iface.clone(),
            DispatchKind::Tc => format!(
                "{} {}",
                h.iface,
                h.direction.map(|d| d.as_str()).unwrap_or("ingress")
            ),
        };
        if on_hook.len() >= crate::dispatcher::MAX_PROGRAMS {
            return Err(Error::precondition(format!(
                "{what} already runs {} {} programs, the most one dispatcher holds; \
                 detach one first",
                on_hook.len(),
                kind.as_str()
            )));
        }
        if !on_hook.is_empty() && !self.features.has("freplace") {
            return Err(Error::unsupported(format!(
                "{what} already has {} program {} attached (link {}); several programs on one \
                 hook need the dispatcher, which needs the kernel feature 'freplace' that this \
                 kernel lacks ({}); detach it first",
                kind.as_str(),
                on_hook[0].program_id,
                on_hook[0].id,
                self.features.detail("freplace")
            )));
        }
        if on_hook.iter().any(|l| l.program_id == p.id) {
            return Err(Error::exists(format!(
                "program {} is already attached to {what}",
                p.id
            )));
        }
        let mut link = Link {
            id: 0,
            program_id: p.id,
            spec,
            ifindex,
            kernel_link_id: 0,
            pin_path: String::new(),
            metadata,
            owner: caller,
            created_at: now_rfc3339(),
            position: 0,
            hook: Some(hook.clone()),
        };
        let id = self.store.insert_link(&link)?;
        fault::point("attach.intent");
        link.id = id;
        let ext_pin = self.ext_pin(id);
        let mut all = on_hook;
        all.push(link.clone());
        if let Err(e) = self.rebuild(&hook, h, all, kind) {
            let _ = std::fs::remove_file(&ext_pin);
            let _ = self.store.delete_link(id);
            return Err(e);
        }
        fault::point("attach.pinned");
        // The link's pin: its extension, or (no freplace: a lone program runs directly
        // and never needs one) the program's own pin.
        let pin_s = if ext_pin.exists() {
            ext_pin.display().to_string()
        } else {
            p.pin_path.clone()
        };
        self.store.complete_link(id, &pin_s, 0)?;
        self.renumber(&hook)?;
        let l = self.link(id)?;
        info!(link = id, program = p.id, hook = %what, position = l.position, "attached through the dispatcher");
        Ok(l)
    }

    /// Whether links like `spec` share their hook through a dispatcher on this kernel,
    /// and which: XDP where freplace works; TC where freplace works (behind a TCX link
    /// where the kernel has TCX, else a classic clsact filter) and, with a lone program
    /// as the filter, where the kernel has neither. Elsewhere tc programs share the hook
    /// through TCX itself, like tcx programs.
    fn dispatch_kind(&self, spec: &AttachSpec) -> Option<DispatchKind> {
        let freplace = self.features.has("freplace");
        match spec {
            AttachSpec::Xdp(_) if freplace => Some(DispatchKind::Xdp),
            AttachSpec::Tc(_) if freplace || !self.features.has("tcx") => Some(DispatchKind::Tc),
            _ => None,
        }
    }

    /// The links on `hook` that run through its dispatcher of `kind`.
    fn dispatched_links(&self, hook: &str, kind: DispatchKind) -> Result<Vec<Link>> {
        Ok(self
            .store
            .links_on_hook(hook)?
            .into_iter()
            .filter(|l| self.dispatch_kind(&l.spec) == Some(kind))
            .collect())
    }

    /// The configured XDP mode of an interface (`[interfaces.<if>] xdp_mode`).
    fn xdp_mode(&self, iface: &str) -> Option<&str> {
        self.config
            .interfaces
            .get(iface)
            .and_then(|i| i.xdp_mode.as_deref())
    }

    fn ext_pin(&self, link_id: u32) -> PathBuf {
        self.kernel.bpffs().join("ext").join(link_id.to_string())
    }

    /// Builds a new dispatcher revision running `links` in order, moves every program
    /// into it, and swaps it onto the interface. A lone program runs directly (no
    /// dispatcher, no overhead) through the same interface link. On failure the running
    /// revision stays untouched.
    fn rebuild(&self, hook: &str, h: &NetHook, links: Vec<Link>, kind: DispatchKind) -> Result<()> {
        use crate::dispatcher::{
            Slot, SlotConfig, order, slot_function, tc_config, tc_mask, xdp_config, xdp_mask,
        };
        let cur = self.store.dispatcher(hook)?;
        let slots = order(
            links
                .iter()
                .map(|l| Slot {
                    link_id: l.id,
                    priority: l.spec.net_hook().map(|h| h.priority).unwrap_or(1000),
                })
                .collect(),
        );
        let by_id = |id: u32| links.iter().find(|l| l.id == id);
        let mut config = Vec::new();
        for s in &slots {
            let l = by_id(s.link_id).ok_or_else(|| Error::internal("slot without link"))?;
            let proceed = l
                .spec
                .net_hook()
                .map(|h| h.proceed_on.clone())
                .unwrap_or_default();
            config.push(SlotConfig {
                chain_call_actions: match kind {
                    DispatchKind::Xdp => xdp_mask(&proceed)?,
                    DispatchKind::Tc => tc_mask(&proceed)?,
                },
                run_prio: s.priority.max(0) as u32,
                flags: 0,
            });
        }
        let base = self.kernel.dispatcher_dir(hook);
        // Above the recorded revision and above any a crash left on bpffs.
        let on_disk = std::fs::read_dir(&base)
            .map(|r| {
                r.flatten()
                    .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        let rev = cur.as_ref().map(|d| d.revision).unwrap_or(0).max(on_disk) + 1;
        let dir = base.join(rev.to_string());
        let disp_pin = dir.join("dispatcher");
        let hook_link = base.join("link");
        let mode = self.xdp_mode(&h.iface);
        let freplace = self.features.has("freplace");
        // Every link keeps an extension ready, so it can move into a dispatcher later.
        let mut fresh = Vec::new();
        for l in links.iter().filter(|_| freplace) {
            let ext = self.ext_pin(l.id);
            if !ext.exists() {
                let p = self.managed(l.program_id)?;
                if let Err(e) = self.load_as_extension(&p, &ext, kind) {
                    for f in &fresh {
                        let _ = std::fs::remove_file(f);
                    }
                    return Err(e);
                }
                fresh.push(ext);
            }
        }
        // Where the hook's attachment is: XDP, a pinned bpf_link updated in place; TC on
        // a TCX kernel, a pinned TCX link updated in place; classic TC, a clsact filter
        // whose program is replaced in place.
        let existing_filter = cur.as_ref().and_then(|d| TcFilter::decode(&d.link_pin));
        let tcx = self.features.has("tcx");
        let install = |prog: &Path| -> Result<String> {
            match kind {
                DispatchKind::Xdp => {
                    self.kernel.install_xdp(h, prog, &hook_link, mode)?;
                    Ok(hook_link.display().to_string())
                }
                DispatchKind::Tc if tcx => {
                    self.kernel.install_tc_link(h, prog, &hook_link)?;
                    Ok(hook_link.display().to_string())
                }
                DispatchKind::Tc => {
                    // A new classic filter: record where it will be first, so a crash
                    // right after making it leaves a record that reconciliation can act
                    // on (a filter holds no pin, so nothing else would find it).
                    if existing_filter.is_none() {
                        self.store.put_dispatcher(&crate::store::DispatcherRecord {
                            hook: hook.to_string(),
                            kind: kind.as_str().into(),
                            revision: 0,
                            dispatcher_pin: String::new(),
                            link_pin: TcFilter::BPFMAN.encode(),
                            program_id: 0,
                        })?;
                    }
                    let made = self.kernel.install_tc(h, prog, existing_filter);
                    if made.is_err() && existing_filter.is_none() {
                        let _ = self.store.delete_dispatcher(hook);
                    }
                    Ok(made?.0.encode())
                }
            }
        };
        let built = (|| -> Result<(u32, String)> {
            if let [only] = slots.as_slice() {
                let l = by_id(only.link_id).ok_or_else(|| Error::internal("slot without link"))?;
                let p = self.managed(l.program_id)?;
                fault::point("rebuild.built");
                let at = install(Path::new(&p.pin_path))?;
                return Ok((0, at));
            }
            // Multi-buffer packets only when every program on the hook supports them.
            let frags = kind == DispatchKind::Xdp
                && slots.iter().all(|s| {
                    by_id(s.link_id)
                        .and_then(|l| self.managed(l.program_id).ok())
                        .is_some_and(|p| self.supports_frags(&p))
                });
            let config = match kind {
                DispatchKind::Xdp => xdp_config(&config, frags)?,
                DispatchKind::Tc => tc_config(&config)?,
            };
            let prog_id = self
                .kernel
                .load_dispatcher(kind, config, &disp_pin, frags)?;
            for (i, s) in slots.iter().enumerate() {
                let slot = slot_function(i);
                self.kernel.attach_extension(
                    &self.ext_pin(s.link_id),
                    kind,
                    &disp_pin,
                    &slot,
                    &dir.join(format!("link_{}", s.link_id)),
                )?;
            }
            fault::point("rebuild.built");
            let at = install(&disp_pin)?;
            Ok((prog_id, at))
        })();
        let (prog_id, link_at) = match built {
            Ok(v) => v,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                for f in &fresh {
                    let _ = std::fs::remove_file(f);
                }
                return Err(e.context(format!("building the {} dispatcher", kind.as_str())));
            }
        };
        fault::point("rebuild.swapped");
        self.store.put_dispatcher(&crate::store::DispatcherRecord {
            hook: hook.to_string(),
            kind: kind.as_str().into(),
            revision: rev,
            // Empty: the lone program runs directly.
            dispatcher_pin: if prog_id == 0 {
                String::new()
            } else {
                disp_pin.display().to_string()
            },
            link_pin: link_at,
            program_id: prog_id,
        })?;
        fault::point("rebuild.recorded");
        // Every older revision goes (normally one; more after a crash mid-rebuild).
        if let Ok(entries) = std::fs::read_dir(&base) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.parse::<u32>().is_ok_and(|r| r != rev) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        info!(
            hook,
            revision = rev,
            programs = slots.len(),
            "dispatcher revision swapped in"
        );
        Ok(())
    }

    /// Whether an XDP program declares multi-buffer support (ELF section `xdp.frags`),
    /// read from its bytecode once and remembered.
    fn supports_frags(&self, p: &Program) -> bool {
        if let Some(v) = self.frags.lock().ok().and_then(|m| m.get(&p.id).copied()) {
            return v;
        }
        let v = self
            .bytecode_of(p)
            .ok()
            .and_then(|b| aya_obj::Object::parse(&b).ok())
            .and_then(|o| o.programs.get(&p.name).map(|x| x.section.clone()))
            .is_some_and(|s| matches!(s, aya_obj::ProgramSection::Xdp { frags: true, .. }));
        if let Ok(mut m) = self.frags.lock() {
            m.insert(p.id, v);
        }
        v
    }

    /// A loaded program's bytecode again: its file, or its image from the cache (pulled
    /// again if it left the cache, with the daemon's own credentials).
    fn bytecode_of(&self, p: &Program) -> Result<Vec<u8>> {
        match &p.bytecode {
            // As the program's owner, with the same limits as its load: the file may have
            // changed since (the caller of a rebuild checks the tag).
            Bytecode::File(f) => {
                let who = Subject::resolve(p.owner.uid, p.owner.gid);
                let bytes = access::read(
                    &identity(&who, p.owner),
                    Path::new(f),
                    &Confine::Anywhere,
                    self.file_limits(),
                )?;
                check_elf(&bytes, f)?;
                Ok(bytes)
            }
            Bytecode::Image { url, .. } => {
                let rec = self.pull_cached(
                    url,
                    PullPolicy::IfNotPresent,
                    &Credentials::default(),
                    &mut |_| {},
                )?;
                self.images.service()?.bytecode(&rec)
            }
        }
    }

    /// Loads program `p` again from its bytecode as an extension (against the shared
    /// extension target), with its globals and its maps, and checks it is the same code
    /// the kernel loaded before.
    fn load_as_extension(&self, p: &Program, pin: &Path, kind: DispatchKind) -> Result<()> {
        let dispatcher = self.kernel.ext_target(kind)?;
        let bytes = self.bytecode_of(p)?;
        let owner = match p.map_owner_id {
            Some(o) => self.managed(o)?,
            None => p.clone(),
        };
        let plan = LoadPlan {
            programs: vec![crate::model::ProgramSpec {
                name: p.name.clone(),
                kind: p.kind,
                attach_fn: None,
            }],
            global_data: p.global_data.clone(),
            shared_maps: Some((PathBuf::from(&owner.map_pin_path), owner.maps.clone())),
        };
        self.kernel
            .load_extension(bytes, plan, kind, &dispatcher, Kernel::EXT_TARGET_SLOT, pin)?;
        let tag = self.kernel.pinned_info(pin)?.tag;
        if tag != p.tag {
            let _ = std::fs::remove_file(pin);
            return Err(Error::precondition(format!(
                "the bytecode of program {} changed since it was loaded (tag {} now, {} then); \
                 unload and load it again",
                p.id, tag, p.tag
            )));
        }
        Ok(())
    }

    /// Removes a link from its hook's dispatcher: a new revision without it, or no
    /// dispatcher at all when it was the last.
    fn detach_dispatched(&self, l: &Link, hook: &str) -> Result<()> {
        let h = l
            .spec
            .net_hook()
            .ok_or_else(|| Error::internal("dispatched link without a hook"))?;
        let kind = self
            .dispatch_kind(&l.spec)
            .ok_or_else(|| Error::internal("detaching a link that runs without a dispatcher"))?;
        let rest: Vec<Link> = self
            .dispatched_links(hook, kind)?
            .into_iter()
            .filter(|x| x.id != l.id)
            .collect();
        if rest.is_empty() {
            if let Some(d) = self.store.dispatcher(hook)? {
                match TcFilter::decode(&d.link_pin) {
                    Some(f) => self.kernel.remove_tc(h, f)?,
                    None => {
                        self.kernel.detach(Path::new(&d.link_pin))?;
                    }
                }
            }
            let _ = std::fs::remove_dir_all(self.kernel.dispatcher_dir(hook));
            self.store.delete_dispatcher(hook)?;
        } else {
            self.rebuild(hook, h, rest, kind)?;
        }
        fault::point("detach.unpinned");
        let _ = std::fs::remove_file(self.ext_pin(l.id));
        self.store.delete_link(l.id)?;
        self.renumber(hook)?;
        info!(
            link = l.id,
            program = l.program_id,
            "detached from the dispatcher"
        );
        Ok(())
    }

    /// The dispatcher revision a link runs in (0: attached directly).
    fn dispatcher_revision(&self, l: &Link) -> u32 {
        if self.dispatch_kind(&l.spec).is_none() {
            return 0;
        }
        l.hook
            .as_deref()
            .and_then(|h| self.store.dispatcher(h).ok().flatten())
            .filter(|d| !d.dispatcher_pin.is_empty())
            .map(|d| d.revision)
            .unwrap_or(0)
    }

    /// Positions on an ordered hook follow (priority, link id); on a TC hook with a
    /// dispatcher behind TCX, the tcx programs come first and then the dispatcher's.
    fn renumber(&self, hook: &str) -> Result<()> {
        let mut links = self.store.links_on_hook(hook)?;
        links.sort_by_key(|l| {
            (
                self.dispatch_kind(&l.spec).is_some(),
                l.spec.net_hook().map(|h| h.priority).unwrap_or(1000),
                l.id,
            )
        });
        for (i, l) in links.iter().enumerate() {
            if l.position != i as i32 {
                self.store.set_position(l.id, i as i32)?;
            }
        }
        Ok(())
    }

    /// Detaches a link.
    pub fn detach(&self, caller: Caller, link_id: u32) -> Result<()> {
        let what = format!("detach link {link_id}");
        let who = self.precheck(caller, Action::Detach, &what)?;
        let l = self.link(link_id)?;
        let (_, ticket) = self
            .decide(
                caller,
                &who,
                &Request::Detach {
                    own: l.owner.uid == caller.uid,
                },
                &what,
            )
            .map_err(|e| e.context(format!("link {link_id}")))?;
        let r = (|| {
            let _gate = self.gate_shared()?;
            let plock = self.lock(format!("prog/{}", l.program_id));
            let _pg = plock.lock().map_err(|_| Error::internal("lock poisoned"))?;
            crate::request::check()?;
            // Re-read under the lock: another call may have removed it meanwhile.
            let now = self.link(link_id)?;
            if now.owner != l.owner {
                return Err(Error::precondition(format!(
                    "link {link_id} changed while the request was decided; try again"
                )));
            }
            self.detach_locked(&now)
        })();
        // Done when it returns: the kernel link id is gone (waited for with no lock held).
        let r = r.map(|gone| {
            if let Some(k) = gone {
                self.kernel.wait_gone(crate::kernel::ids::Object::Link, k);
            }
        });
        ticket.finish(&r);
        r
    }

    /// Detaches under the locks; returns the kernel link id to wait for, if any.
    fn detach_locked(&self, l: &Link) -> Result<Option<u32>> {
        // The key recorded at attach: the namespace may be gone by now.
        let hook = l.hook.clone();
        let hlock = hook.as_ref().map(|k| self.lock(format!("hook/{k}")));
        let _hg = match &hlock {
            Some(lk) => Some(lk.lock().map_err(|_| Error::internal("lock poisoned"))?),
            None => None,
        };
        if let Some(k) = &hook
            && self.dispatch_kind(&l.spec).is_some()
            && self.store.dispatcher(k)?.is_some()
        {
            return self.detach_dispatched(l, k).map(|()| None);
        }
        let gone = self.kernel.detach(Path::new(&l.pin_path))?;
        fault::point("detach.unpinned");
        self.store.delete_link(l.id)?;
        if let Some(k) = &hook {
            self.renumber(k)?;
        }
        info!(link = l.id, program = l.program_id, "detached");
        Ok(gone)
    }

    fn link(&self, id: u32) -> Result<Link> {
        self.store.link(id)?.ok_or_else(|| {
            Error::not_found(format!(
                "link {id} does not exist (see `bpfman list links`)"
            ))
        })
    }

    fn link_view(&self, link: Link) -> Result<LinkView> {
        Ok(LinkView {
            program_name: self
                .store
                .program(link.program_id)?
                .map(|p| p.name)
                .unwrap_or_default(),
            dispatcher_revision: self.dispatcher_revision(&link),
            link,
        })
    }

    /// One link, for a caller the policy lets `get`.
    pub fn get_link(&self, caller: Caller, id: u32) -> Result<LinkView> {
        self.authorize_read(caller, Action::Get)?;
        self.link_view(self.link(id)?)
    }

    /// Links (of one program, or all), for a caller the policy lets `list`.
    pub fn list_links(&self, caller: Caller, program_id: Option<u32>) -> Result<Vec<LinkView>> {
        self.authorize_read(caller, Action::List)?;
        self.store
            .links(program_id)?
            .into_iter()
            .map(|l| self.link_view(l))
            .collect()
    }

    fn view(&self, p: Program) -> Result<ProgramView> {
        let kernel = self
            .kernel
            .pinned_info(Path::new(&p.pin_path))
            .unwrap_or_else(|_| KernelProgram {
                id: p.id,
                name: p.name.clone(),
                ..Default::default()
            });
        let links = self.store.links(Some(p.id))?.iter().map(|l| l.id).collect();
        let map_used_by = self.store.map_users(p.id)?;
        Ok(ProgramView {
            program: Some(p),
            kernel,
            links,
            map_used_by,
        })
    }

    /// One program: bpfman's record when it has one, else the kernel's facts alone.
    /// A program this daemon manages. Any other id, in the kernel or not, is NOT_FOUND
    /// (as upstream: Get says nothing about programs that are not bpfman's; `list
    /// --all` shows the kernel's others, under the policy's `list`).
    pub fn get(&self, caller: Caller, id: u32) -> Result<ProgramView> {
        self.authorize_read(caller, Action::Get)?;
        self.view(self.managed(id)?)
    }

    /// The views of programs a caller has just loaded (the Load reply).
    pub fn views(&self, programs: Vec<Program>) -> Result<Vec<ProgramView>> {
        programs.into_iter().map(|p| self.view(p)).collect()
    }

    /// Programs, for a caller the policy lets `list`.
    pub fn list(&self, caller: Caller, filter: &ListFilter) -> Result<Vec<ProgramView>> {
        self.authorize_read(caller, Action::List)?;
        let managed = self.store.programs()?;
        let mut out = Vec::new();
        for p in managed.iter().cloned() {
            if !filter
                .metadata
                .iter()
                .all(|(k, v)| p.metadata.get(k) == Some(v))
            {
                continue;
            }
            let v = self.view(p)?;
            if filter
                .kernel_type
                .is_some_and(|t| t != v.kernel.program_type)
            {
                continue;
            }
            out.push(v);
        }
        if filter.all && filter.metadata.is_empty() {
            for k in self.kernel.all_programs() {
                if managed.iter().any(|p| p.id == k.id) {
                    continue;
                }
                if filter.kernel_type.is_some_and(|t| t != k.program_type) {
                    continue;
                }
                out.push(ProgramView {
                    program: None,
                    kernel: k,
                    links: Vec::new(),
                    map_used_by: Vec::new(),
                });
            }
            out.sort_by_key(|v| v.kernel.id);
        }
        Ok(out)
    }

    /// Brings store and bpffs into agreement: records whose pins are gone are dropped,
    /// pins no record knows are removed. Returns what it did.
    /// Compares store, bpffs and kernel now and repairs, for a caller the policy lets
    /// `reconcile` (root always; the daemon's background runs ask as itself). Audited.
    pub fn reconcile(&self, caller: Caller) -> Result<ReconcileReport> {
        let what = "reconcile";
        let who = self.precheck(caller, Action::Reconcile, what)?;
        let (_, ticket) = self.decide(caller, &who, &Request::Admin(Action::Reconcile), what)?;
        let r = self.reconcile_with(false);
        ticket.finish(&r);
        r
    }

    /// `at_start`: the daemon has just started, so an operation of the previous process
    /// may have been cut short anywhere (see `reconcile_dispatchers`).
    fn reconcile_with(&self, at_start: bool) -> Result<ReconcileReport> {
        // No load, unload, attach or detach is half done while this runs.
        let _gate = self
            .gate
            .write()
            .map_err(|_| Error::internal("lock poisoned"))?;
        let mut report = ReconcileReport::default();
        let links = self.store.links(None)?;
        for l in &links {
            if l.pin_path.is_empty() || pin_gone(&l.pin_path, &mut report) {
                report.actions.push(format!(
                    "link {} (program {}, {}): pin {} is gone; removed the record",
                    l.id,
                    l.program_id,
                    l.spec.target(),
                    if l.pin_path.is_empty() {
                        "(never made)"
                    } else {
                        &l.pin_path
                    }
                ));
                self.store.delete_link(l.id)?;
            }
        }
        let mut programs = self.store.programs()?;
        // Users before owners, so a map owner goes after the programs that use its maps.
        programs.sort_by_key(|p| std::cmp::Reverse(p.map_owner_id.is_some()));
        for p in &programs {
            if pin_gone(&p.pin_path, &mut report) {
                for l in self.store.links(Some(p.id))? {
                    let _ = self.kernel.detach(Path::new(&l.pin_path));
                    self.store.delete_link(l.id)?;
                }
                if let Ok(mut f) = self.frags.lock() {
                    f.remove(&p.id);
                }
                match self.store.delete_program(p.id) {
                    Ok(()) => report.actions.push(format!(
                        "program {} ({}): pin {} is gone; removed the record",
                        p.id, p.name, p.pin_path
                    )),
                    Err(e) => warn!(id = p.id, "cannot drop record of vanished program: {e}"),
                }
            }
        }
        // Pins nobody recorded: left by a crash between pin and record.
        let known_progs: Vec<String> = self
            .store
            .programs()?
            .iter()
            .map(|p| p.pin_path.clone())
            .collect();
        let known_links: Vec<String> = self
            .store
            .links(None)?
            .iter()
            .map(|l| l.pin_path.clone())
            .collect();
        let known_maps: Vec<String> = self
            .store
            .programs()?
            .iter()
            .map(|p| p.map_pin_path.clone())
            .collect();
        let bpffs = self.kernel.bpffs().to_path_buf();
        let mut orphan = |path: PathBuf, what: &str, known: &[String]| {
            let s = path.display().to_string();
            if !known.contains(&s) {
                let r = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                report.actions.push(match r {
                    Ok(()) => format!("{what} pin {s} had no record; removed it"),
                    Err(e) => format!("{what} pin {s} had no record; removing it failed: {e}"),
                });
            }
        };
        for (dir, what, known) in [
            (bpffs.clone(), "program", &known_progs),
            (bpffs.join("links"), "link", &known_links),
            (bpffs.join("maps"), "map", &known_maps),
        ] {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if what == "program" && !name.starts_with("prog_") {
                    continue;
                }
                orphan(e.path(), what, known);
            }
        }
        self.reconcile_interfaces(&mut report)?;
        self.reconcile_dispatchers(&mut report, at_start)?;
        for a in &report.actions {
            warn!("reconcile: {a}");
        }
        Ok(report)
    }

    /// Makes every dispatched hook run exactly the links the store records: a crash
    /// mid-rebuild can leave a newer revision swapped in but unrecorded, a half-built
    /// one, or a hook whose detach did not finish. Each is rebuilt from the store (the
    /// swap is atomic, so traffic never misses the programs that stay) or removed.
    ///
    /// A classic TC filter cannot be asked which program it runs (no bpf_link), so at
    /// start-up each classic TC hook that has links is rebuilt from the store: a crash
    /// between swapping a revision in and recording it would otherwise go unnoticed. The
    /// filter's program is replaced in place, so traffic does not notice.
    fn reconcile_dispatchers(&self, report: &mut ReconcileReport, at_start: bool) -> Result<()> {
        let root = self.kernel.bpffs().join("dispatchers");
        let mut hooks: std::collections::BTreeSet<String> = self
            .store
            .dispatchers()?
            .into_iter()
            .map(|d| d.hook)
            .collect();
        if let Ok(entries) = std::fs::read_dir(&root) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !name.starts_with("ext-target") {
                    hooks.insert(name.replace('_', "/"));
                }
            }
        }
        // Hooks whose links run through a dispatcher (the kinds that use one here).
        for l in self.store.links(None)? {
            if let Some(h) = &l.hook
                && self.dispatch_kind(&l.spec).is_some()
            {
                hooks.insert(h.clone());
            }
        }
        for hook in hooks {
            let lock = self.lock(format!("hook/{hook}"));
            let _g = lock.lock().map_err(|_| Error::internal("lock poisoned"))?;
            let rec = self.store.dispatcher(&hook)?;
            let dir = self.kernel.dispatcher_dir(&hook);
            let kind = if hook.starts_with("tc/") {
                DispatchKind::Tc
            } else {
                DispatchKind::Xdp
            };
            let links = self.dispatched_links(&hook, kind)?;
            if links.is_empty() {
                // Nothing should run here: take down what a crash left.
                let mut what = Vec::new();
                if let Some(r) = &rec {
                    match TcFilter::decode(&r.link_pin) {
                        Some(f) => match self.hook_of_key(&hook) {
                            Some(h) => {
                                self.kernel.remove_tc(&h, f)?;
                                what.push("removed its tc filter".to_string());
                            }
                            None => what.push(
                                "its tc filter is in another namespace; remove it by hand".into(),
                            ),
                        },
                        None => {
                            self.kernel.detach(Path::new(&r.link_pin))?;
                            what.push("detached it".into());
                        }
                    }
                    self.store.delete_dispatcher(&hook)?;
                } else if dir.join("link").exists() {
                    self.kernel.detach(&dir.join("link"))?;
                    what.push("detached it".into());
                }
                if dir.exists() {
                    let _ = std::fs::remove_dir_all(&dir);
                    what.push("removed its pins".into());
                }
                if !what.is_empty() {
                    report.actions.push(format!(
                        "dispatcher {hook}: no link is recorded on it; {}",
                        what.join(", ")
                    ));
                }
                continue;
            }
            let Some(h) = links.iter().find_map(|l| l.spec.net_hook().cloned()) else {
                continue;
            };
            let classic_at_start = at_start
                && rec
                    .as_ref()
                    .is_some_and(|r| TcFilter::decode(&r.link_pin).is_some());
            let consistent = !classic_at_start
                && rec.as_ref().is_some_and(|r| {
                    let lone = r.dispatcher_pin.is_empty();
                    let rev_dir = dir.join(r.revision.to_string());
                    let slots_ok = if lone {
                        links.len() == 1
                    } else {
                        let mut want: Vec<String> =
                            links.iter().map(|l| format!("link_{}", l.id)).collect();
                        let mut have: Vec<String> = std::fs::read_dir(&rev_dir)
                            .map(|r| {
                                r.flatten()
                                    .map(|e| e.file_name().to_string_lossy().into_owned())
                                    .filter(|n| n.starts_with("link_"))
                                    .collect()
                            })
                            .unwrap_or_default();
                        want.sort();
                        have.sort();
                        want == have && rev_dir.join("dispatcher").exists()
                    };
                    // A classic TC filter is checked (and repaired) below; a bpf_link (XDP,
                    // or TC behind TCX) must run the recorded program.
                    let running_ok = match TcFilter::decode(&r.link_pin) {
                        Some(_) => true,
                        None => {
                            let expect = if lone {
                                self.store
                                    .program(links[0].program_id)
                                    .ok()
                                    .flatten()
                                    .and_then(|p| {
                                        self.kernel.pinned_info(Path::new(&p.pin_path)).ok()
                                    })
                                    .map(|k| k.id)
                            } else {
                                Some(r.program_id)
                            };
                            expect.is_some()
                                && self.kernel.link_program_id(Path::new(&r.link_pin)) == expect
                        }
                    };
                    slots_ok && running_ok
                });
            // Classic TC: the filter (and its clsact qdisc) can be deleted by other tools
            // (`tc qdisc del dev X clsact`). Putting the running program on it again is
            // harmless when it is there; install_tc makes the filter again when it is not.
            if consistent
                && kind == DispatchKind::Tc
                && let Some(r) = &rec
                && let Some(f) = TcFilter::decode(&r.link_pin)
            {
                let prog = if r.dispatcher_pin.is_empty() {
                    self.store
                        .program(links[0].program_id)?
                        .map(|p| PathBuf::from(p.pin_path))
                } else {
                    Some(PathBuf::from(&r.dispatcher_pin))
                };
                if let Some(prog) = prog {
                    match self.kernel.install_tc(&h, &prog, Some(f)) {
                        Ok((_, false)) => {}
                        Ok((nf, true)) => {
                            let mut r2 = r.clone();
                            r2.link_pin = nf.encode();
                            self.store.put_dispatcher(&r2)?;
                            report.actions.push(format!(
                                "dispatcher {hook}: its tc filter was gone (the clsact qdisc \
                                 deleted outside bpfman?); put it back"
                            ));
                        }
                        Err(e) => report.actions.push(format!(
                            "dispatcher {hook}: its tc filter is gone and putting it back \
                             failed: {e}"
                        )),
                    }
                }
            }
            if consistent {
                // Drop revisions a crash left beside the recorded one.
                if let (Some(r), Ok(entries)) = (&rec, std::fs::read_dir(&dir)) {
                    for e in entries.flatten() {
                        let name = e.file_name().to_string_lossy().into_owned();
                        if name.parse::<u32>().is_ok_and(|n| n != r.revision) {
                            let _ = std::fs::remove_dir_all(e.path());
                            report.actions.push(format!(
                                "dispatcher {hook}: revision {name} was left by an interrupted \
                                 rebuild; removed it"
                            ));
                        }
                    }
                }
                continue;
            }
            match self.rebuild(&hook, &h, links.clone(), kind) {
                Ok(()) if classic_at_start => info!(
                    hook,
                    links = links.len(),
                    "classic TC dispatcher rebuilt from the store at start-up"
                ),
                Ok(()) => report.actions.push(format!(
                    "dispatcher {hook}: what ran did not match the {} recorded link(s); rebuilt it",
                    links.len()
                )),
                Err(e) => report.actions.push(format!(
                    "dispatcher {hook}: does not match the store and rebuilding failed: {e}"
                )),
            }
        }
        // Extensions whose link is gone.
        let known: Vec<u32> = self.store.links(None)?.iter().map(|l| l.id).collect();
        if let Ok(entries) = std::fs::read_dir(self.kernel.bpffs().join("ext")) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.parse::<u32>().is_ok_and(|id| !known.contains(&id)) {
                    let _ = std::fs::remove_file(e.path());
                    report
                        .actions
                        .push(format!("extension pin ext/{name} had no link; removed it"));
                }
            }
        }
        Ok(())
    }

    /// Links on interfaces or namespaces deleted (or replaced) behind the daemon's back:
    /// the kernel has already detached them; the records and pins go too.
    fn reconcile_interfaces(&self, report: &mut ReconcileReport) -> Result<()> {
        for l in self.store.links(None)? {
            let Some(h) = l.spec.net_hook() else { continue };
            let gone = match self.kernel.check_interface(h) {
                // Only the kernel's word that the device or namespace is gone counts;
                // any other failure (EMFILE, EACCES, ...) keeps the link and is reported.
                Err(e) if e.kind() == ErrorKind::NotFound => Some(e.to_string()),
                Err(e) => {
                    report.actions.push(format!(
                        "link {} (program {}, {}): could not check its interface ({e}); kept",
                        l.id,
                        l.program_id,
                        l.spec.target()
                    ));
                    None
                }
                Ok(ifindex) if l.ifindex.is_some_and(|i| i != ifindex) => Some(format!(
                    "interface {} was deleted and created again (ifindex {} now, {} then)",
                    h.iface,
                    ifindex,
                    l.ifindex.unwrap_or(0)
                )),
                Ok(_) => None,
            };
            if let Some(why) = gone {
                let hook_lock = l.hook.as_ref().map(|k| self.lock(format!("hook/{k}")));
                let _g = match &hook_lock {
                    Some(lk) => Some(lk.lock().map_err(|_| Error::internal("lock poisoned"))?),
                    None => None,
                };
                let pin = Path::new(&l.pin_path);
                // A dispatched link's pin is its extension (or its program's own pin):
                // leave the program; drop only what belongs to the link.
                if pin.starts_with(self.kernel.bpffs().join("links")) {
                    let _ = self.kernel.detach(pin);
                }
                let _ = std::fs::remove_file(self.ext_pin(l.id));
                self.store.delete_link(l.id)?;
                report.actions.push(format!(
                    "link {} (program {}, {}): {why}; the kernel detached it, record removed",
                    l.id,
                    l.program_id,
                    l.spec.target()
                ));
            }
        }
        Ok(())
    }

    /// The interface a hook key names, when it is in the daemon's own namespace.
    fn hook_of_key(&self, hook: &str) -> Option<NetHook> {
        let parts: Vec<&str> = hook.split('/').collect();
        let (ns, ifindex, dir) = match parts.as_slice() {
            [_, ns, i] => (*ns, *i, None),
            [_, ns, i, d] => (*ns, *i, Some(*d)),
            _ => return None,
        };
        let own = netns_id(None).ok()?;
        if ns != own.to_string() {
            return None;
        }
        let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
        let idx: u32 = ifindex.parse().ok()?;
        // SAFETY: buf is IF_NAMESIZE bytes, as if_indextoname requires.
        let p = unsafe { libc::if_indextoname(idx, buf.as_mut_ptr()) };
        if p.is_null() {
            return None;
        }
        // SAFETY: if_indextoname wrote a NUL-terminated name into buf.
        let iface = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        Some(NetHook {
            iface,
            direction: match dir {
                Some("egress") => Some(crate::model::Direction::Egress),
                Some(_) => Some(crate::model::Direction::Ingress),
                None => None,
            },
            priority: 0,
            proceed_on: Vec::new(),
            netns: None,
        })
    }
}

/// Whether a pin is gone: only when the file system says it does not exist. Any other
/// failure to look (no fd left, say) is reported and counts as present.
fn pin_gone(pin: &str, report: &mut ReconcileReport) -> bool {
    match std::fs::symlink_metadata(pin) {
        Ok(_) => false,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => {
            report.actions.push(format!(
                "pin {pin}: could not check it ({e}); its record is kept"
            ));
            false
        }
    }
}

fn open_audit(p: &PolicyConfig) -> Result<Option<std::fs::File>> {
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
fn command_of(pid: i32) -> String {
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

/// Whether an error is the caller's doing (for logs).
pub fn is_client_error(e: &Error) -> bool {
    !matches!(e.kind(), ErrorKind::Internal | ErrorKind::Kernel)
}
