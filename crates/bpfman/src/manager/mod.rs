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
use crate::bpffs::Bpffs;
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::fault;
use crate::image::registry::Credentials;
use crate::image::{ImageRecord, ImageService, Progress, PullPolicy, SignaturePolicy};
use crate::kernel::ops::Ops;
use crate::kernel::probe::Features;
use crate::kernel::{Kernel, KernelProgram, LoadPlan, TcxAnchor, netns_id};
use crate::model::{
    AttachSpec, Bytecode, Caller, DispatcherRecord, HookAttachment, HookKey, HookKind,
    KernelFeature, Link, LoadRequest, NetHook, ProceedOn, Program, ProgramKind, TcFilter,
    now_rfc3339,
};
use crate::policy::{Action, Decision, Policy, PolicyConfig, Request, Rule, Subject};
use crate::store::Store;

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

/// What one repair was about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepairSubject {
    Program(u32),
    Link(u32),
    /// A pin no record knows (program, link, map or extension pin).
    Pin(PathBuf),
    Dispatcher(HookKey),
}

/// How a repair ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairOutcome {
    /// Store, bpffs and kernel agree on the subject now.
    Repaired,
    /// Something could not be checked; the subject was kept as it is.
    Kept,
    /// The repair was attempted and failed; the difference remains.
    Failed,
}

/// One entry of a reconciliation report: typed for a status writer or a metric, with the
/// sentence an operator reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repair {
    pub subject: RepairSubject,
    pub outcome: RepairOutcome,
    pub text: String,
}

impl std::fmt::Display for Repair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// A report of what reconciliation found and did.
#[derive(Debug, Clone, Default)]
pub struct ReconcileReport {
    pub repairs: Vec<Repair>,
}

impl ReconcileReport {
    fn push(&mut self, subject: RepairSubject, outcome: RepairOutcome, text: String) {
        self.repairs.push(Repair {
            subject,
            outcome,
            text,
        });
    }
    fn repaired(&mut self, subject: RepairSubject, text: String) {
        self.push(subject, RepairOutcome::Repaired, text);
    }
    fn kept(&mut self, subject: RepairSubject, text: String) {
        self.push(subject, RepairOutcome::Kept, text);
    }
    fn failed(&mut self, subject: RepairSubject, text: String) {
        self.push(subject, RepairOutcome::Failed, text);
    }

    /// The sentences, in order (the API's `actions`).
    pub fn actions(&self) -> Vec<String> {
        self.repairs.iter().map(|r| r.text.clone()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.repairs.is_empty()
    }

    pub fn len(&self) -> usize {
        self.repairs.len()
    }
}

mod attach;
mod authz;
mod checks;
mod dispatch;
#[cfg(test)]
mod fake;
mod images;
mod load;
mod observe;
mod plan;
mod reconcile;
pub mod tenant;
mod views;

pub use observe::{LinkSample, ProgramSample, RunStats, Snapshot};

use attach::intent;
use authz::*;
use checks::*;
use images::*;

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

pub struct Manager {
    config: Config,
    policy: RwLock<Arc<Policy>>,
    audit: Arc<AuditLog>,
    reservations: Mutex<Reservations>,
    pulls: Mutex<HashMap<u32, u32>>,
    store: Store,
    kernel: Arc<dyn Ops>,
    /// The pin layout on bpffs (the only place paths under it are made).
    bpffs: Bpffs,
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
    /// Bytecode held in memory by loads in progress.
    bytecode_budget: Arc<access::Budget>,
    /// Event counters for the metrics endpoint.
    events: Arc<crate::metrics::Events>,
    /// What scrapes keep of programs' unchanging facts between scrapes.
    stats_cache: Mutex<crate::kernel::stats::StatsCache>,
    /// Tenant uid -> Kubernetes namespace, as read from the store.
    tenants: Mutex<HashMap<u32, String>>,
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

impl Manager {
    /// Opens the store, probes the kernel, and reconciles the two.
    pub fn open(paths: Paths, config: Config) -> Result<(Self, ReconcileReport)> {
        if let Some(dir) = paths.database.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::internal(format!("creating {}: {e}", dir.display())))?;
        }
        let store = Store::open(&paths.database)?;
        let bpffs = Bpffs::new(&paths.bpffs)?;
        let kernel = Arc::new(Kernel::new(&bpffs));
        let features = crate::kernel::probe::probe(&paths.bpffs);
        Self::assemble(paths, config, store, bpffs, kernel, features)
    }

    /// A manager over the fake kernel (unit tests), with a store and pins under `paths`.
    #[cfg(test)]
    pub(crate) fn open_fake(paths: Paths, config: Config) -> Result<(Self, Arc<fake::FakeKernel>)> {
        if let Some(dir) = paths.database.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        let store = Store::open(&paths.database)?;
        let bpffs = Bpffs::new(&paths.bpffs)?;
        let fake = Arc::new(fake::FakeKernel::new(&bpffs));
        let features = Features {
            kernel_release: "fake".into(),
            list: Vec::new(),
        };
        let (m, _) = Self::assemble(paths, config, store, bpffs, fake.clone(), features)?;
        Ok((m, fake))
    }

    fn assemble(
        paths: Paths,
        config: Config,
        store: Store,
        bpffs: Bpffs,
        kernel: Arc<dyn Ops>,
        features: Features,
    ) -> Result<(Self, ReconcileReport)> {
        let audit = open_audit(&config.policy)?;
        let images = config.images.clone();
        let bytecode_budget = access::Budget::new(config.daemon.max_bytecode_bytes_in_flight);
        let m = Self {
            policy: RwLock::new(Arc::new(Policy::new(config.policy.clone()))),
            audit: Arc::new(AuditLog {
                file: Mutex::new(audit),
            }),
            reservations: Mutex::new(Reservations::default()),
            tenants: Mutex::new(HashMap::new()),
            pulls: Mutex::new(HashMap::new()),
            config,
            store,
            kernel,
            bpffs,
            features,
            paths,
            locks: Mutex::new(HashMap::new()),
            lingering: Mutex::new(HashMap::new()),
            gate: RwLock::new(()),
            images: ImagePuller::new(&images)?,
            bytecode_budget,
            events: Arc::new(crate::metrics::Events::default()),
            stats_cache: Mutex::new(Default::default()),
        };
        let report = m.reconcile_with(true)?;
        Ok((m, report))
    }

    /// Entries in the manager's per-key tables (for tests and metrics): each goes back
    /// to its idle size when nothing is in progress (`lingering`: programs that outlived
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

    fn require(&self, feature: KernelFeature, what: &str) -> Result<()> {
        if self.features.has(feature) {
            Ok(())
        } else {
            Err(Error::unsupported(format!(
                "{what} needs the kernel feature '{feature}', which this kernel lacks: {}",
                self.features.detail(feature)
            )))
        }
    }
}

/// Whether an error is the caller's doing (for logs).
pub fn is_client_error(e: &Error) -> bool {
    !matches!(e.kind(), ErrorKind::Internal | ErrorKind::Kernel)
}
