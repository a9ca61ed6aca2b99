//! Owns the agent's controllers and what triggers them. Per application kind, two
//! controllers over one shared context:
//!
//! * the application controller: one reconcile per application and event (never a list of
//!   every application), creating the node's State, converging it (see `converge`) and writing
//!   its status by server-side apply only when it changed;
//! * the State controller (States of this node only): takes down the programs of a State that
//!   is being deleted or whose application is gone, then releases the agent's finalizer.
//!
//! Triggers besides the watched objects themselves: the agent's own Node changing labels or
//! addresses, host interfaces coming and going, pods on the node changing, and the daemon
//! watch (restarts, programs or links removed behind the agent's back).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bpfman_k8s::conditions::{StateCondition, now_rfc3339};
use bpfman_k8s::names::{LABEL_HOSTNAME, LABEL_OWNED_BY_PROGRAM};
use bpfman_k8s::v1alpha1::{
    AppLoadStatus, BpfApplication, ClusterBpfApplication, ClusterBpfApplicationStateStatus,
};
use futures::channel::mpsc::{UnboundedSender, unbounded};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use sha2::{Digest, Sha256};

use crate::converge::{self, Input, MapOwnerWait};
use crate::daemon::{Daemon, Resync};
use crate::expand::NodeView;
use crate::kinds::AppKind;
use crate::select::Selector;

/// The field manager of every write the agent makes.
pub const FIELD_MANAGER: &str = "bpfman-agent";

/// How the agent runs.
#[derive(Clone, Debug)]
pub struct Options {
    pub node: String,
    pub socket: std::path::PathBuf,
    /// Where the node's /proc is seen (netns paths of pods are written under it).
    pub proc_dir: String,
    /// How often the daemon is checked for restarts and missing programs or links.
    pub daemon_interval: Duration,
    /// How often host interfaces are checked.
    pub interface_interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("daemon: {0}")]
    Daemon(String),
    #[error("{0}")]
    Other(String),
}

impl From<bpfman_client::Error> for Error {
    fn from(e: bpfman_client::Error) -> Self {
        Error::Daemon(e.message().to_string())
    }
}

/// What every reconcile of either kind shares.
pub struct Shared {
    pub client: Client,
    pub opts: Options,
    pub daemon: Arc<Daemon>,
    pub nodes: Store<Node>,
    pub pods: Arc<crate::pods::Pods>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Shared {
    /// Serialises work on one application (its two controllers may both act on it).
    async fn lock(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let m = {
            let mut g = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            g.retain(|_, v| Arc::strong_count(v) > 1);
            g.entry(key.to_string()).or_default().clone()
        };
        m.lock_owned().await
    }

    /// The node as expansion sees it, or none before the Node has been read.
    fn node_view(&self) -> Option<NodeView> {
        let n = self.nodes.get(&ObjectRef::new(&self.opts.node))?;
        let internal_ips: Vec<IpAddr> = n
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .filter(|a| a.type_ == "InternalIP")
            .filter_map(|a| a.address.parse().ok())
            .collect();
        Some(NodeView {
            name: self.opts.node.clone(),
            labels: n.labels().clone(),
            internal_ips,
            interfaces: crate::host::interfaces(),
            pods: self.pods.views(),
            proc_dir: self.opts.proc_dir.clone(),
        })
    }
}

/// Set once a watch has listed everything (its first `InitDone`); any number of tasks may
/// wait for it. (A reflector `Store`'s own readiness wakes only one waiter, and the
/// controller's runner is already that one.)
#[derive(Default)]
pub struct Ready {
    flag: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl Ready {
    fn set(&self) {
        self.flag.store(true, std::sync::atomic::Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    async fn wait(&self) {
        loop {
            let n = self.notify.notified();
            if self.flag.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            n.await;
        }
    }
}

/// One kind's context.
pub struct KindCtx<A: AppKind> {
    pub shared: Arc<Shared>,
    /// Applications as read: one that does not read as its kind is an `Err` in its place.
    pub apps: Store<DeserializeGuard<A>>,
    pub apps_ready: Arc<Ready>,
    pub states: Store<A::State>,
    pub states_ready: Arc<Ready>,
    pub kick: UnboundedSender<ObjectRef<DeserializeGuard<A>>>,
}

/// A reflected watch of `api` whose first full listing sets the returned [`Ready`].
#[allow(clippy::type_complexity)]
fn reflected<K>(
    api: kube::Api<K>,
    wc: watcher::Config,
) -> (
    Store<K>,
    Arc<Ready>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let ready = Arc::new(Ready::default());
    let r = ready.clone();
    let stream = watcher(api, wc)
        .default_backoff()
        .inspect(move |ev| {
            if matches!(ev, Ok(watcher::Event::InitDone)) {
                r.set();
            }
        })
        .reflect(writer)
        .applied_objects();
    (store, ready, stream)
}

fn state_name(app: &str, node: &str, app_uid: &str) -> String {
    let h = Sha256::digest(format!("{node}/{app_uid}").as_bytes());
    let suffix: String = h[..4].iter().map(|b| format!("{b:02x}")).collect();
    // A DNS subdomain: at most 253 characters.
    let app: String = app.chars().take(253 - 9).collect();
    format!("{app}-{suffix}")
}

/// The `ownedByProgram` label value: the application's name, or (past the 63 characters a
/// label value may hold) its first 54 characters and a digest. The owner reference's UID is
/// what identifies the owner; the label is for selection.
pub fn owner_label(app: &str) -> String {
    if app.len() <= 63 {
        return app.to_string();
    }
    let h = Sha256::digest(app.as_bytes());
    let suffix: String = h[..4].iter().map(|b| format!("{b:02x}")).collect();
    let head: String = app.chars().take(54).collect();
    format!("{}-{suffix}", head.trim_end_matches(['-', '.', '_']))
}

fn controller_owner<S: Resource>(s: &S, kind: &str) -> Option<(String, String)> {
    s.meta()
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.kind == kind && o.controller == Some(true))
        .map(|o| (o.name.clone(), o.uid.clone()))
}

/// This node's States of `app` (its label, this node, its UID as controller owner).
fn owned_states<A: AppKind>(ctx: &KindCtx<A>, app: &A) -> Vec<Arc<A::State>> {
    let uid = app.uid().unwrap_or_default();
    let label = owner_label(&app.name_any());
    let mut v: Vec<Arc<A::State>> = ctx
        .states
        .state()
        .into_iter()
        .filter(|s| s.namespace() == app.namespace())
        .filter(|s| {
            s.labels().get(LABEL_OWNED_BY_PROGRAM) == Some(&label)
                && s.labels().get(LABEL_HOSTNAME) == Some(&ctx.shared.opts.node)
        })
        .filter(|s| controller_owner(s.as_ref(), A::KIND).is_some_and(|(_, u)| u == uid))
        .collect();
    v.sort_by_key(|s| {
        (
            s.meta().creation_timestamp.clone().map(|t| t.0),
            s.name_any(),
        )
    });
    v
}

async fn create_state<A: AppKind>(ctx: &KindCtx<A>, app: &A) -> Result<A::State, Error> {
    let sh = &ctx.shared;
    let uid = app
        .uid()
        .ok_or_else(|| Error::Other("the application has no UID".into()))?;
    let name = state_name(&app.name_any(), &sh.opts.node, &uid);
    let mut meta = serde_json::json!({
        "name": name,
        "labels": {
            LABEL_OWNED_BY_PROGRAM: owner_label(&app.name_any()),
            LABEL_HOSTNAME: sh.opts.node,
        },
        "finalizers": [A::FINALIZER],
        "ownerReferences": [{
            "apiVersion": "bpfman.io/v1alpha1",
            "kind": A::KIND,
            "name": app.name_any(),
            "uid": uid,
            "controller": true,
            "blockOwnerDeletion": true,
        }],
    });
    if let Some(ns) = app.namespace() {
        meta["namespace"] = ns.into();
    }
    let obj: A::State = serde_json::from_value(serde_json::json!({
        "apiVersion": "bpfman.io/v1alpha1",
        "kind": A::STATE_KIND,
        "metadata": meta,
    }))
    .map_err(|e| Error::Other(format!("building the State: {e}")))?;
    let api = A::state_api(sh.client.clone(), app.namespace().as_deref());
    match api.create(&PostParams::default(), &obj).await {
        Ok(s) => Ok(s),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            // Made by an earlier pass whose event has not arrived yet (the name is derived).
            let s = api.get(&name).await?;
            if controller_owner(&s, A::KIND).is_some_and(|(_, u)| u == uid) {
                Ok(s)
            } else {
                Err(Error::Other(format!(
                    "State {name} exists and belongs to another application of that name (being deleted?)"
                )))
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Writes `new` unless it says what the State already says (times and updateCount aside).
async fn write_status<A: AppKind>(
    sh: &Shared,
    state: &A::State,
    mut new: ClusterBpfApplicationStateStatus,
) -> Result<(), Error> {
    let old = A::state_status(state);
    if let Some(o) = &old {
        if let (Some(oc), Some(nc)) = (o.conditions.first(), new.conditions.first_mut())
            && oc.type_ == nc.type_
        {
            nc.last_transition_time = oc.last_transition_time.clone();
        }
        new.update_count = o.update_count;
        if *o == new {
            return Ok(());
        }
    }
    new.update_count = old
        .map(|o| o.update_count.saturating_add(1))
        .unwrap_or(1)
        .max(1);
    let patch = serde_json::json!({
        "apiVersion": "bpfman.io/v1alpha1",
        "kind": A::STATE_KIND,
        "status": new,
    });
    A::state_api(sh.client.clone(), state.namespace().as_deref())
        .patch_status(
            &state.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    Ok(())
}

async fn remove_finalizer<A: AppKind>(sh: &Shared, state: &A::State) -> Result<(), Error> {
    let fins = state.finalizers().to_vec();
    if !fins.iter().any(|f| f == A::FINALIZER) {
        return Ok(());
    }
    let rest: Vec<&String> = fins.iter().filter(|f| *f != A::FINALIZER).collect();
    // The resourceVersion makes it conditional: a concurrent change (another finalizer
    // added) fails with a conflict and is retried, never overwritten.
    let patch = serde_json::json!({
        "metadata": {
            "finalizers": rest,
            "resourceVersion": state.resource_version(),
        }
    });
    match A::state_api(sh.client.clone(), state.namespace().as_deref())
        .patch(
            &state.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Takes this State's programs down and releases it.
async fn finalize<A: AppKind>(sh: &Shared, state: &A::State) -> Result<(), Error> {
    let uid = state.uid().unwrap_or_default();
    let mut c = sh.daemon.client().await?;
    let node = sh.opts.node.clone();
    match converge::teardown(&mut c, &uid).await {
        Ok(()) => {
            let st = ClusterBpfApplicationStateStatus {
                update_count: 0,
                node,
                app_load_status: AppLoadStatus::UnloadSuccess,
                programs: Vec::new(),
                conditions: vec![StateCondition::Unloaded.condition(None, &now_rfc3339(), None)],
            };
            // Best effort: a State being deleted may already be gone.
            if let Err(e) = write_status::<A>(sh, state, st).await {
                tracing::debug!(state = state.name_any(), error = %e, "writing the final status");
            }
            remove_finalizer::<A>(sh, state).await
        }
        Err(msg) => {
            let st = ClusterBpfApplicationStateStatus {
                update_count: 0,
                node,
                app_load_status: AppLoadStatus::UnloadError,
                programs: A::state_status(state).map(|s| s.programs).unwrap_or_default(),
                conditions: vec![StateCondition::UnloadError.condition(
                    Some(&format!("{msg}; the agent retries, and the State's finalizer stays until it succeeds")),
                    &now_rfc3339(),
                    None,
                )],
            };
            let _ = write_status::<A>(sh, state, st).await;
            Err(Error::Daemon(msg))
        }
    }
}

/// The map owner's first program id on this node, per `mapOwnerSelector`.
fn map_owner<A: AppKind>(
    ctx: &KindCtx<A>,
    app: &A,
    sel: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
) -> Result<Option<u32>, MapOwnerWait> {
    let Some(sel) = sel else { return Ok(None) };
    let s =
        Selector::new(sel).map_err(|e| MapOwnerWait::Error(format!("mapOwnerSelector: {e}")))?;
    let owners: Vec<A> = ctx
        .apps
        .state()
        .into_iter()
        .filter_map(|g| g.0.as_ref().ok().cloned())
        .filter(|o| o.namespace() == app.namespace() && o.uid() != app.uid())
        .filter(|o| s.matches(o.labels()))
        .collect();
    let owner = match owners.as_slice() {
        [] => {
            return Err(MapOwnerWait::Pending(
                "no application matches mapOwnerSelector yet: waiting for the map owner".into(),
            ));
        }
        [o] => o.clone(),
        many => {
            return Err(MapOwnerWait::Error(format!(
                "mapOwnerSelector matches {} applications ({}): it must select exactly one",
                many.len(),
                many.iter()
                    .map(|o| o.name_any())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    };
    let id = owned_states(ctx, &owner)
        .first()
        .and_then(|st| A::state_status(st))
        .and_then(|st| st.programs.iter().find_map(|p| p.program_id));
    match id {
        Some(id) => Ok(Some(id)),
        None => Err(MapOwnerWait::Pending(format!(
            "waiting for the map owner {} to load on node {}",
            owner.name_any(),
            ctx.shared.opts.node
        ))),
    }
}

async fn pull_auth(
    sh: &Shared,
    spec: &bpfman_k8s::v1alpha1::ClusterBpfApplicationSpec,
) -> Result<Option<(String, String)>, String> {
    let Some(img) = &spec.byte_code.image else {
        return Ok(None);
    };
    let Some(sec) = &img.image_pull_secret else {
        return Ok(None);
    };
    let api: kube::Api<Secret> = kube::Api::namespaced(sh.client.clone(), &sec.namespace);
    let s = match api.get_opt(&sec.name).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return Err(format!(
                "Secret {}/{} does not exist",
                sec.namespace, sec.name
            ));
        }
        Err(e) => {
            return Err(format!(
                "reading Secret {}/{} failed: {e}",
                sec.namespace, sec.name
            ));
        }
    };
    let data: BTreeMap<String, Vec<u8>> = s
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    crate::secret::credentials(&data, &img.url)
        .map(Some)
        .map_err(|e| format!("Secret {}/{}: {e}", sec.namespace, sec.name))
}

async fn reconcile_app<A: AppKind>(
    guard: Arc<DeserializeGuard<A>>,
    ctx: Arc<KindCtx<A>>,
) -> Result<Action, Error> {
    let app = match &guard.0 {
        Ok(a) => Arc::new(a.clone()),
        Err(invalid) => {
            // One unreadable object (no spec, a wrong type the schema let through) is
            // reported and skipped; every other application is served.
            tracing::warn!(
                kind = A::KIND,
                name = invalid.metadata.name.as_deref().unwrap_or_default(),
                namespace = invalid.metadata.namespace.as_deref().unwrap_or_default(),
                error = %invalid.error,
                "the application does not read as its kind: skipped (fix or delete it)"
            );
            return Ok(Action::await_change());
        }
    };
    let sh = ctx.shared.clone();
    let key = app.key();
    ctx.states_ready.wait().await;
    let _g = sh.lock(&key).await;
    let Some(node) = sh.node_view() else {
        return Err(Error::Other(format!(
            "Node {} is not known yet (does it exist?)",
            sh.opts.node
        )));
    };
    let states = owned_states(&ctx, &app);
    let (deleting, live): (Vec<_>, Vec<_>) = states
        .into_iter()
        .partition(|s| s.meta().deletion_timestamp.is_some());
    if app.meta().deletion_timestamp.is_some() {
        for s in &live {
            finalize::<A>(&sh, s).await?;
        }
        sh.daemon
            .expect(&key, Default::default(), Default::default());
        return Ok(Action::await_change());
    }
    // More than one (two agents raced, or upstream's and ours): keep the oldest.
    for extra in live.iter().skip(1) {
        tracing::warn!(
            state = extra.name_any(),
            "a second State for this node: deleting it"
        );
        let api = A::state_api(sh.client.clone(), extra.namespace().as_deref());
        let _ = api
            .delete(&extra.name_any(), &DeleteParams::default())
            .await;
    }
    let state = match live.first() {
        Some(s) => (**s).clone(),
        None if !deleting.is_empty() => {
            // The State controller finalizes it; its deletion kicks this application again.
            return Ok(Action::await_change());
        }
        None => create_state(&ctx, &app).await?,
    };
    let state_uid = state.uid().unwrap_or_default();
    let spec = app.cluster_spec();
    let old = A::state_status(&state);
    let map_owner = match &spec {
        Ok(s) => map_owner(&ctx, &app, s.map_owner_selector.as_ref()),
        Err(_) => Ok(None),
    };
    let pull_auth = match &spec {
        Ok(s) => pull_auth(&sh, s).await,
        Err(_) => Ok(None),
    };
    let mut c = sh.daemon.client().await?;
    if let Some(ns) = app.scope() {
        // A namespaced application: decided, owned and counted as its namespace's.
        c = c.on_behalf_of_namespace(&ns)?;
    }
    let conv = match converge::converge(
        &mut c,
        Input {
            app_name: &app.name_any(),
            spec,
            node: &node,
            state_uid: &state_uid,
            old: old.as_ref(),
            map_owner,
            pull_auth,
            generation: app.meta().generation,
        },
    )
    .await
    {
        Ok(c) => c,
        Err(e) => {
            if e.is_transport() {
                sh.daemon.reset().await;
            }
            return Err(e.into());
        }
    };
    sh.daemon.expect(&key, conv.programs, conv.links);
    write_status::<A>(&sh, &state, conv.status).await?;
    Ok(match conv.retry {
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    })
}

async fn reconcile_state<A: AppKind>(
    state: Arc<A::State>,
    ctx: Arc<KindCtx<A>>,
) -> Result<Action, Error> {
    let sh = ctx.shared.clone();
    if !state.finalizers().iter().any(|f| f == A::FINALIZER) {
        return Ok(Action::await_change());
    }
    let Some((app_name, app_uid)) = controller_owner(state.as_ref(), A::KIND) else {
        return Ok(Action::await_change());
    };
    let ns = state.namespace();
    let app_ref = ObjectRef::<DeserializeGuard<A>>::new(&app_name).within_opt(ns.clone());
    ctx.apps_ready.wait().await;
    let app_alive = match ctx.apps.get(&app_ref) {
        Some(a) if a.uid().as_deref() == Some(app_uid.as_str()) => true,
        _ => {
            // Confirm with the API server before taking anything down.
            match A::guard_api(sh.client.clone(), ns.as_deref())
                .get_opt(&app_name)
                .await?
            {
                Some(a) => a.uid().as_deref() == Some(app_uid.as_str()),
                None => false,
            }
        }
    };
    let deleting = state.meta().deletion_timestamp.is_some();
    if app_alive && !deleting {
        let _ = ctx.kick.unbounded_send(app_ref);
        return Ok(Action::await_change());
    }
    let key = A::key_of(ns.as_deref(), &app_name);
    let _g = sh.lock(&key).await;
    finalize::<A>(&sh, &state).await?;
    if !app_alive {
        sh.daemon
            .expect(&key, Default::default(), Default::default());
        if !deleting {
            // Its application is gone (garbage collection would delete it; do not wait).
            let api = A::state_api(sh.client.clone(), ns.as_deref());
            let _ = api
                .delete(&state.name_any(), &DeleteParams::default())
                .await;
        }
    } else {
        let _ = ctx.kick.unbounded_send(app_ref);
    }
    Ok(Action::await_change())
}

trait WithinOpt {
    fn within_opt(self, ns: Option<String>) -> Self;
}
impl<K: Resource<DynamicType = ()>> WithinOpt for ObjectRef<K> {
    fn within_opt(self, ns: Option<String>) -> Self {
        match ns {
            Some(ns) => self.within(&ns),
            None => self,
        }
    }
}

fn error_policy<K, A: AppKind>(_: Arc<K>, e: &Error, _: Arc<KindCtx<A>>) -> Action {
    tracing::warn!(kind = A::KIND, error = %e, "reconcile failed; retrying in 5 s");
    Action::requeue(Duration::from_secs(5))
}

/// A stream that yields `()` each time `rx` gets a message.
fn all_trigger(rx: futures::channel::mpsc::UnboundedReceiver<()>) -> impl Stream<Item = ()> + Send {
    rx
}

/// Runs one kind's two controllers until the process ends.
async fn run_kind<A: AppKind>(
    sh: Arc<Shared>,
    all_rx: futures::channel::mpsc::UnboundedReceiver<()>,
    keys_rx: futures::channel::mpsc::UnboundedReceiver<String>,
) where
    A::State: Resource<DynamicType = ()>,
{
    let wc = watcher::Config::default().labels(&format!("{LABEL_HOSTNAME}={}", sh.opts.node));
    let (states, states_ready, state_stream) = reflected(A::state_api(sh.client.clone(), None), wc);
    let state_ctl = Controller::for_stream(state_stream, states.clone());
    // An application deleted without a finalizer leaves its States to garbage collection;
    // the agent does not wait for it: a deleted application triggers its States' reconcile.
    let owned = states.clone();
    let state_ctl = state_ctl.watches(
        A::guard_api(sh.client.clone(), None),
        watcher::Config::default(),
        move |app: DeserializeGuard<A>| {
            let uid = app.uid();
            owned
                .state()
                .into_iter()
                .filter(|s| controller_owner(s.as_ref(), A::KIND).map(|(_, u)| u) == uid)
                .map(|s| ObjectRef::from_obj(s.as_ref()))
                .collect::<Vec<_>>()
        },
    );
    let (kick, kick_rx) = unbounded::<ObjectRef<DeserializeGuard<A>>>();
    let (apps, apps_ready, app_stream) = reflected(
        A::guard_api(sh.client.clone(), None),
        watcher::Config::default(),
    );
    let app_ctl = Controller::for_stream(app_stream, apps.clone());
    let ctx = Arc::new(KindCtx::<A> {
        shared: sh.clone(),
        apps,
        apps_ready,
        states,
        states_ready,
        kick: kick.clone(),
    });
    // Daemon drift names application keys; route them to object references.
    let keyed = keys_rx.filter_map(move |k| {
        let r = parse_key::<A>(&k);
        futures::future::ready(r)
    });
    let apps = app_ctl
        .reconcile_on(futures::stream::select(kick_rx, keyed))
        .reconcile_all_on(all_trigger(all_rx))
        .run(
            reconcile_app::<A>,
            error_policy::<DeserializeGuard<A>, A>,
            ctx.clone(),
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::warn!(error = %e, "application controller");
            }
        });
    let states = state_ctl
        .run(reconcile_state::<A>, error_policy::<A::State, A>, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::warn!(error = %e, "State controller");
            }
        });
    futures::join!(apps, states);
}

fn parse_key<A: AppKind>(k: &str) -> Option<ObjectRef<DeserializeGuard<A>>> {
    let mut parts = k.splitn(3, '/');
    let kind = parts.next()?;
    if kind != A::KEY {
        return None;
    }
    let a = parts.next()?;
    match parts.next() {
        Some(name) => Some(ObjectRef::new(name).within(a)),
        None => Some(ObjectRef::new(a)),
    }
}

/// Runs the agent until the process is stopped.
pub async fn run(client: Client, opts: Options) -> anyhow::Result<()> {
    let daemon = Arc::new(Daemon::new(opts.socket.clone()));
    // The agent's own Node: labels and addresses.
    let (nodes, writer) = reflector::store::<Node>();
    let node_api: kube::Api<Node> = kube::Api::all(client.clone());
    let node_stream = watcher(
        node_api,
        watcher::Config::default().fields(&format!("metadata.name={}", opts.node)),
    )
    .default_backoff()
    .reflect(writer)
    .applied_objects();
    let pods = Arc::new(crate::pods::Pods::new(client.clone(), &opts));
    let sh = Arc::new(Shared {
        client: client.clone(),
        opts: opts.clone(),
        daemon: daemon.clone(),
        nodes,
        pods: pods.clone(),
        locks: Mutex::new(HashMap::new()),
    });
    let (c_all, c_all_rx) = unbounded::<()>();
    let (n_all, n_all_rx) = unbounded::<()>();
    let (c_keys, c_keys_rx) = unbounded::<String>();
    let (n_keys, n_keys_rx) = unbounded::<String>();
    let all = {
        let (c, n) = (c_all.clone(), n_all.clone());
        move || {
            let _ = c.unbounded_send(());
            let _ = n.unbounded_send(());
        }
    };
    // Node label/address changes.
    let node_task = {
        let all = all.clone();
        async move {
            let mut last: Option<(BTreeMap<String, String>, String)> = None;
            let mut s = std::pin::pin!(node_stream);
            while let Some(ev) = s.next().await {
                match ev {
                    Ok(n) => {
                        let addrs =
                            format!("{:?}", n.status.as_ref().and_then(|s| s.addresses.clone()));
                        let now = (n.labels().clone(), addrs);
                        if last.as_ref() != Some(&now) {
                            last = Some(now);
                            all();
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "watching the Node"),
                }
            }
        }
    };
    // Host interfaces.
    let (if_tx, mut if_rx) = tokio::sync::mpsc::channel::<()>(4);
    tokio::spawn(crate::host::watch(opts.interface_interval, if_tx));
    let if_task = {
        let all = all.clone();
        async move {
            while if_rx.recv().await.is_some() {
                all();
            }
        }
    };
    // Pods on this node.
    let (pod_tx, mut pod_rx) = tokio::sync::mpsc::channel::<()>(4);
    tokio::spawn(pods.clone().run(pod_tx));
    let pod_task = {
        let all = all.clone();
        async move {
            while pod_rx.recv().await.is_some() {
                all();
            }
        }
    };
    // The daemon.
    let (d_tx, mut d_rx) = tokio::sync::mpsc::channel::<Resync>(4);
    tokio::spawn(crate::daemon::watch(
        daemon.clone(),
        opts.daemon_interval,
        d_tx,
    ));
    let d_task = {
        let all = all.clone();
        async move {
            while let Some(r) = d_rx.recv().await {
                match r {
                    Resync::All => all(),
                    Resync::Keys(keys) => {
                        for k in keys {
                            let _ = c_keys.unbounded_send(k.clone());
                            let _ = n_keys.unbounded_send(k);
                        }
                    }
                }
            }
        }
    };
    tracing::info!(node = opts.node, socket = %opts.socket.display(), "bpfman-agent running");
    futures::join!(
        node_task,
        if_task,
        pod_task,
        d_task,
        run_kind::<ClusterBpfApplication>(sh.clone(), c_all_rx, c_keys_rx),
        run_kind::<BpfApplication>(sh.clone(), n_all_rx, n_keys_rx),
    );
    Ok(())
}
