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

#[cfg(test)]
use std::collections::BTreeSet;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bpfman_k8s::conditions::{StateCondition, now_rfc3339};
use bpfman_k8s::names::{LABEL_HOSTNAME, LABEL_OWNED_BY_PROGRAM, METADATA_PROGRAM_NAME};
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
            pods_error: self.pods.error(),
            proc_dir: self.opts.proc_dir.clone(),
            confined: false,
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
    /// Wakes the orphan sweep (a State or an application was deleted).
    pub sweep: Arc<tokio::sync::Notify>,
}

/// A reflected watch of `api` whose first full listing sets the returned [`Ready`].
#[allow(clippy::type_complexity)]
fn reflected<K>(
    api: kube::Api<K>,
    wc: watcher::Config,
    on_delete: impl Fn(&K) + Send + 'static,
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
        .inspect(move |ev| match ev {
            Ok(watcher::Event::InitDone) => r.set(),
            // Deleted, or no longer matching the watch's label selector.
            Ok(watcher::Event::Delete(k)) => on_delete(k),
            _ => {}
        })
        .reflect(writer)
        .applied_objects();
    (store, ready, stream)
}

/// How many names a State may take on one node: the first is derived from the node and the
/// application's UID; the others are taken only when an object squats the one before.
const STATE_NAME_ATTEMPTS: u32 = 4;

/// The `attempt`th name of the application's State on `node`: the application's name (cut to
/// fit a DNS subdomain, never ending in '.' or '-') and 8 hex digits derived from the node and
/// the application's UID.
fn state_name(app: &str, node: &str, app_uid: &str, attempt: u32) -> String {
    let seed = match attempt {
        0 => format!("{node}/{app_uid}"),
        n => format!("{node}/{app_uid}/{n}"),
    };
    let h = Sha256::digest(seed.as_bytes());
    let suffix: String = h[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{suffix}", state_prefix(app))
}

fn state_prefix(app: &str) -> String {
    // A DNS subdomain: at most 253 characters, each dot-separated part ending alphanumeric.
    let head: String = app.chars().take(253 - 9).collect();
    head.trim_end_matches(['-', '.']).to_string()
}

/// This node's candidate names for the application's State.
fn state_names(app: &str, node: &str, app_uid: &str) -> Vec<String> {
    (0..STATE_NAME_ATTEMPTS)
        .map(|n| state_name(app, node, app_uid, n))
        .collect()
}

/// Whether `name` has the shape of an agent-made State name of `app` (for some node): such a
/// State, labelled for this node but not named for it, is another node's State relabelled,
/// never this agent's to act on.
fn agent_shaped(name: &str, app: &str) -> bool {
    let prefix = state_prefix(app);
    name.strip_prefix(prefix.as_str())
        .and_then(|r| r.strip_prefix('-'))
        .is_some_and(|h| h.len() == 8 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// How the programs of a State name it in their metadata (see `converge::METADATA_STATE`).
fn state_ref<A: AppKind>(ns: Option<&str>, state: &str) -> String {
    match ns {
        Some(ns) => format!("{}/{ns}/{state}", A::KEY),
        None => format!("{}/{state}", A::KEY),
    }
}

/// The namespace and name of a State from its `state_ref`, when it is of kind `A`.
fn parse_state_ref<A: AppKind>(r: &str) -> Option<(Option<String>, String)> {
    let rest = r.strip_prefix(A::KEY)?.strip_prefix('/')?;
    match rest.split_once('/') {
        Some((ns, name)) => Some((Some(ns.to_string()), name.to_string())),
        None => Some((None, rest.to_string())),
    }
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

/// The application owning a State: its controller reference of the kind, else (the flag
/// cleared behind the agent's back) its first reference of the kind.
fn controller_owner<S: Resource>(s: &S, kind: &str) -> Option<(String, String)> {
    let refs = s.meta().owner_references.as_deref().unwrap_or_default();
    refs.iter()
        .find(|o| o.kind == kind && o.controller == Some(true))
        .or_else(|| refs.iter().find(|o| o.kind == kind))
        .map(|o| (o.name.clone(), o.uid.clone()))
}

fn has_finalizer<S: Resource>(s: &S, f: &str) -> bool {
    s.meta().finalizers.iter().flatten().any(|x| x == f)
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

/// Makes the application's State on this node under the first of its candidate names that
/// is free or already its own (made by an earlier pass whose event has not arrived, or one
/// whose labels were changed: those are put back).
async fn create_state<A: AppKind>(ctx: &KindCtx<A>, app: &A) -> Result<A::State, Error> {
    let sh = &ctx.shared;
    let uid = app
        .uid()
        .ok_or_else(|| Error::Other("the application has no UID".into()))?;
    let api = A::state_api(sh.client.clone(), app.namespace().as_deref());
    let mut taken = Vec::new();
    for name in state_names(&app.name_any(), &sh.opts.node, &uid) {
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
        match api.create(&PostParams::default(), &obj).await {
            Ok(s) => return Ok(s),
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let Some(s) = api.get_opt(&name).await? else {
                    continue;
                };
                let owned = controller_owner(&s, A::KIND).is_some_and(|(_, u)| u == uid)
                    || holds(sh, &s.uid().unwrap_or_default()).await?;
                if owned && s.meta().deletion_timestamp.is_some() {
                    // Being deleted, held by someone else's finalizer: taken down (once) and
                    // passed over for the next name.
                    if has_finalizer(&s, A::FINALIZER) {
                        finalize::<A>(sh, &s).await?;
                    }
                    taken.push(name);
                    continue;
                }
                if owned {
                    return repair::<A>(sh, app, s).await;
                }
                tracing::warn!(
                    state = name,
                    "an object not of this application holds the State's name: trying the next name"
                );
                taken.push(name);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Other(format!(
        "every name this node's State may take is held by another object ({}): delete those",
        taken.join(", ")
    )))
}

/// Puts back the labels and the finalizer of the application's own State when something
/// removed or changed them (a State without them is invisible to this node's agent, or
/// deleted without its programs being taken down).
async fn repair<A: AppKind>(sh: &Shared, app: &A, s: A::State) -> Result<A::State, Error> {
    let label = owner_label(&app.name_any());
    let labelled = s.labels().get(LABEL_HOSTNAME) == Some(&sh.opts.node)
        && s.labels().get(LABEL_OWNED_BY_PROGRAM) == Some(&label);
    let finalized = s.finalizers().iter().any(|f| f == A::FINALIZER);
    let uid = app.uid().unwrap_or_default();
    let owner = serde_json::json!({
        "apiVersion": "bpfman.io/v1alpha1",
        "kind": A::KIND,
        "name": app.name_any(),
        "uid": uid,
        "controller": true,
        "blockOwnerDeletion": true,
    });
    let owned = s.meta().owner_references.as_deref().is_some_and(|r| {
        r.len() == 1 && r[0].uid == uid && r[0].kind == A::KIND && r[0].controller == Some(true)
    });
    if s.meta().deletion_timestamp.is_some() || (labelled && finalized && owned) {
        return Ok(s);
    }
    tracing::warn!(
        state = s.name_any(),
        "the State's labels, finalizer or owner were changed: putting them back"
    );
    let mut fins = s.finalizers().to_vec();
    if !finalized {
        fins.push(A::FINALIZER.to_string());
    }
    // Conditional on the resourceVersion: a concurrent change is retried, never overwritten.
    let patch = serde_json::json!({
        "metadata": {
            "labels": {LABEL_HOSTNAME: sh.opts.node, LABEL_OWNED_BY_PROGRAM: label},
            "finalizers": fins,
            "ownerReferences": [owner],
            "resourceVersion": s.resource_version(),
        }
    });
    Ok(A::state_api(sh.client.clone(), s.namespace().as_deref())
        .patch(
            &s.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?)
}

/// Writes `new` unless it says what the State already says (times and updateCount aside).
async fn write_status<A: AppKind>(
    sh: &Shared,
    state: &A::State,
    mut new: ClusterBpfApplicationStateStatus,
) -> Result<bool, Error> {
    let old = A::state_status(state);
    if let Some(o) = &old {
        if let (Some(oc), Some(nc)) = (o.conditions.first(), new.conditions.first_mut())
            && oc.type_ == nc.type_
        {
            nc.last_transition_time = oc.last_transition_time.clone();
        }
        new.update_count = o.update_count;
        if *o == new {
            return Ok(false);
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
    Ok(true)
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

/// The map owner's program id on this node, per `mapOwnerSelector`: read from the daemon
/// (the programs loaded for the owner's State here), never from a State's status, which
/// anyone who may write States could point at another tenant's program.
async fn map_owner<A: AppKind>(
    ctx: &KindCtx<A>,
    app: &A,
    sel: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
) -> Result<Result<Option<u32>, MapOwnerWait>, Error> {
    let Some(sel) = sel else { return Ok(Ok(None)) };
    let s = match Selector::new(sel) {
        Ok(s) => s,
        Err(e) => return Ok(Err(MapOwnerWait::Error(format!("mapOwnerSelector: {e}")))),
    };
    let owners: Vec<A> = ctx
        .apps
        .state()
        .into_iter()
        .filter_map(|g| g.0.as_ref().ok().cloned())
        .filter(|o| o.namespace() == app.namespace() && o.uid() != app.uid())
        .filter(|o| o.meta().deletion_timestamp.is_none())
        .filter(|o| s.matches(o.labels()))
        .collect();
    let owner = match owners.as_slice() {
        [] => {
            return Ok(Err(MapOwnerWait::Pending(
                "no application matches mapOwnerSelector yet: waiting for the map owner".into(),
            )));
        }
        [o] => o.clone(),
        many => {
            return Ok(Err(MapOwnerWait::Error(format!(
                "mapOwnerSelector matches {} applications ({}): it must select exactly one",
                many.len(),
                many.iter()
                    .map(|o| o.name_any())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))));
        }
    };
    let first: Vec<String> = owner
        .cluster_spec()
        .map(|s| s.programs.iter().map(|p| p.name.clone()).collect())
        .unwrap_or_default();
    let mut c = ctx.shared.daemon.client().await?;
    for st in owned_states(ctx, &owner) {
        let Some(uid) = st.uid() else { continue };
        let held = converge::ours(&mut c, &uid).await?;
        // The owner's first program in its spec's order (they share one set of maps).
        let id = first
            .iter()
            .find_map(|n| held.iter().find(|(_, i)| i.name == *n).map(|(id, _)| *id))
            .or_else(|| held.keys().next().copied());
        if let Some(id) = id {
            return Ok(Ok(Some(id)));
        }
    }
    Ok(Err(MapOwnerWait::Pending(format!(
        "waiting for the map owner {} to load on node {}",
        owner.name_any(),
        ctx.shared.opts.node
    ))))
}

/// Kicks the applications that share `app`'s maps (their `mapOwnerSelector` selects it): they
/// load once it has, and move when it reloads or goes.
fn kick_users<A: AppKind>(
    ctx: &KindCtx<A>,
    ns: Option<&str>,
    uid: &str,
    labels: &BTreeMap<String, String>,
) {
    for g in ctx.apps.state() {
        let Ok(u) = &g.0 else { continue };
        if u.namespace().as_deref() != ns || u.uid().as_deref() == Some(uid) {
            continue;
        }
        let Ok(spec) = u.cluster_spec() else { continue };
        let Some(sel) = spec.map_owner_selector.as_ref() else {
            continue;
        };
        if Selector::new(sel).is_ok_and(|s| s.matches(labels)) {
            let r = ObjectRef::<DeserializeGuard<A>>::new(&u.name_any()).within_opt(u.namespace());
            let _ = ctx.kick.unbounded_send(r);
        }
    }
}

/// Whether this node's daemon holds programs of the State with this UID.
async fn holds(sh: &Shared, state_uid: &str) -> Result<bool, Error> {
    let mut c = sh.daemon.client().await?;
    Ok(!converge::ours(&mut c, state_uid).await?.is_empty())
}

/// The application named (`bpfman.io/ProgramName`) by the programs this node's daemon holds
/// for the State with this UID.
async fn recorded_app(sh: &Shared, state_uid: &str) -> Result<Option<String>, Error> {
    let mut c = sh.daemon.client().await?;
    Ok(converge::ours(&mut c, state_uid)
        .await?
        .values()
        .find_map(|i| i.metadata.get(METADATA_PROGRAM_NAME).cloned()))
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
        Err(invalid) => return unreadable::<A>(&ctx, invalid).await,
    };
    let sh = ctx.shared.clone();
    let key = app.key();
    ctx.states_ready.wait().await;
    let _g = sh.lock(&key).await;
    let Some(mut node) = sh.node_view() else {
        return Err(Error::Other(format!(
            "Node {} is not known yet (does it exist?)",
            sh.opts.node
        )));
    };
    node.confined = app.scope().is_some();
    let uid = app.uid().unwrap_or_default();
    let names = state_names(&app.name_any(), &sh.opts.node, &uid);
    let mut states = owned_states(&ctx, &app);
    // A State under one of this node's names whose owner or labels were changed is still
    // the application's when this daemon holds its programs.
    for s in ctx.states.state() {
        if s.namespace() == app.namespace()
            && names.contains(&s.name_any())
            && !states.iter().any(|o| o.uid() == s.uid())
            && holds(&sh, &s.uid().unwrap_or_default()).await?
        {
            states.push(s);
        }
    }
    let (deleting, live): (Vec<_>, Vec<_>) = states
        .into_iter()
        .partition(|s| s.meta().deletion_timestamp.is_some());
    if app.meta().deletion_timestamp.is_some() {
        for s in &live {
            finalize::<A>(&sh, s).await?;
        }
        sh.daemon
            .expect(&key, Default::default(), Default::default());
        kick_users(&ctx, app.namespace().as_deref(), &uid, app.labels());
        return Ok(Action::await_change());
    }
    // This node's State: the one under a name made for this node; else (made by upstream's
    // agent) one whose programs this node's daemon holds.
    let mut mine = live.iter().position(|s| names.contains(&s.name_any()));
    if mine.is_none() {
        for (i, s) in live.iter().enumerate() {
            if holds(&sh, &s.uid().unwrap_or_default()).await? {
                mine = Some(i);
                break;
            }
        }
    }
    for (i, extra) in live.iter().enumerate() {
        if Some(i) == mine {
            continue;
        }
        let name = extra.name_any();
        let ours = holds(&sh, &extra.uid().unwrap_or_default()).await?;
        if !ours && agent_shaped(&name, &app.name_any()) {
            // Another node's State, relabelled: its own agent puts the label back.
            tracing::debug!(
                state = name,
                "a State labelled for this node but named for another: left alone"
            );
            continue;
        }
        tracing::warn!(state = name, "a second State for this node: deleting it");
        if ours {
            finalize::<A>(&sh, extra).await?;
        }
        let api = A::state_api(sh.client.clone(), extra.namespace().as_deref());
        let _ = api.delete(&name, &DeleteParams::default()).await;
    }
    let state = match mine {
        Some(i) => repair::<A>(&sh, &app, (*live[i]).clone()).await?,
        None if deleting
            .iter()
            .any(|s| names.contains(&s.name_any()) && has_finalizer(s.as_ref(), A::FINALIZER)) =>
        {
            // The State controller finalizes it; its deletion kicks this application again.
            return Ok(Action::await_change());
        }
        None => create_state(&ctx, &app).await?,
    };
    if state.meta().deletion_timestamp.is_some() {
        // Being deleted but unseen by the watch (its labels were changed): finalized here.
        finalize::<A>(&sh, &state).await?;
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let state_uid = state.uid().unwrap_or_default();
    let sref = state_ref::<A>(state.namespace().as_deref(), &state.name_any());
    let spec = app.cluster_spec();
    let old = A::state_status(&state);
    let map_owner = match &spec {
        Ok(s) => map_owner(&ctx, &app, s.map_owner_selector.as_ref()).await?,
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
            state_ref: &sref,
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
    let retry = conv.retry;
    sh.daemon.expect(&key, conv.programs, conv.links);
    if write_status::<A>(&sh, &state, conv.status).await? {
        kick_users(&ctx, app.namespace().as_deref(), &uid, app.labels());
    }
    Ok(match retry {
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    })
}

/// An application that no longer reads as its kind (its spec removed, a wrong type the schema
/// let through): its State here says so; what its last readable spec loaded stays, described
/// as it was (or, when the State does not describe it exactly, is unloaded).
async fn unreadable<A: AppKind>(
    ctx: &KindCtx<A>,
    invalid: &kube::core::error_boundary::InvalidObject,
) -> Result<Action, Error> {
    let m = &invalid.metadata;
    let name = m.name.clone().unwrap_or_default();
    tracing::warn!(
        kind = A::KIND,
        name,
        namespace = m.namespace.as_deref().unwrap_or_default(),
        error = %invalid.error,
        "the application does not read as its kind (fix or delete it)"
    );
    let Some(uid) = m.uid.clone() else {
        return Ok(Action::await_change());
    };
    let sh = ctx.shared.clone();
    ctx.states_ready.wait().await;
    let key = A::key_of(m.namespace.as_deref(), &name);
    let _g = sh.lock(&key).await;
    let Some(mut node) = sh.node_view() else {
        return Ok(Action::requeue(Duration::from_secs(5)));
    };
    node.confined = m.namespace.is_some();
    let names = state_names(&name, &sh.opts.node, &uid);
    let Some(state) = ctx
        .states
        .state()
        .into_iter()
        .filter(|s| s.meta().deletion_timestamp.is_none() && names.contains(&s.name_any()))
        .find(|s| controller_owner(s.as_ref(), A::KIND).is_some_and(|(_, u)| u == uid))
    else {
        return Ok(Action::await_change());
    };
    if m.deletion_timestamp.is_some() {
        // Being deleted (held by someone else's finalizer): taken down like any other.
        finalize::<A>(&sh, &state).await?;
        return Ok(Action::await_change());
    }
    let state_uid = state.uid().unwrap_or_default();
    let sref = state_ref::<A>(state.namespace().as_deref(), &state.name_any());
    let old = A::state_status(&state);
    let mut c = sh.daemon.client().await?;
    if let Some(ns) = &m.namespace {
        c = c.on_behalf_of_namespace(ns)?;
    }
    let conv = converge::converge(
        &mut c,
        Input {
            app_name: &name,
            spec: Err(format!(
                "the {} does not read: {}: fix its spec (what it last loaded here stays loaded until then)",
                A::KIND,
                invalid.error
            )),
            node: &node,
            state_uid: &state_uid,
            state_ref: &sref,
            old: old.as_ref(),
            map_owner: Ok(None),
            pull_auth: Ok(None),
            generation: m.generation,
        },
    )
    .await?;
    write_status::<A>(&sh, &state, conv.status).await?;
    Ok(Action::await_change())
}

async fn reconcile_state<A: AppKind>(
    state: Arc<A::State>,
    ctx: Arc<KindCtx<A>>,
) -> Result<Action, Error> {
    let sh = ctx.shared.clone();
    let Some((app_name, app_uid)) = controller_owner(state.as_ref(), A::KIND) else {
        return Ok(Action::await_change());
    };
    if !state.finalizers().iter().any(|f| f == A::FINALIZER) {
        // Removed behind the agent's back: its application's reconcile puts it back (a State
        // that then vanishes is found by the sweep through its programs).
        if state.meta().deletion_timestamp.is_none() {
            let r = ObjectRef::<DeserializeGuard<A>>::new(&app_name).within_opt(state.namespace());
            let _ = ctx.kick.unbounded_send(r);
        }
        return Ok(Action::await_change());
    }
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
    if !deleting && !agent_shaped(&state.name_any(), &app_name) {
        // Its owner reference names an application its name does not: changed behind the
        // agent's back. The programs it holds say whose it is.
        let state_uid = state.uid().unwrap_or_default();
        if let Some(real) = recorded_app(&sh, &state_uid).await?
            && real != app_name
        {
            let real_ref = ObjectRef::<DeserializeGuard<A>>::new(&real).within_opt(ns.clone());
            let real_alive = ctx.apps.get(&real_ref).is_some()
                || A::guard_api(sh.client.clone(), ns.as_deref())
                    .get_opt(&real)
                    .await?
                    .is_some();
            if real_alive {
                // Its application adopts it back (and restores the owner reference).
                let _ = ctx.kick.unbounded_send(real_ref);
                return Ok(Action::await_change());
            }
            tracing::info!(
                state = state.name_any(),
                app = real,
                "the application whose programs this State holds is gone: taking them down"
            );
            let key = A::key_of(ns.as_deref(), &real);
            let _g = sh.lock(&key).await;
            finalize::<A>(&sh, &state).await?;
            sh.daemon
                .expect(&key, Default::default(), Default::default());
            let api = A::state_api(sh.client.clone(), ns.as_deref());
            let _ = api
                .delete(&state.name_any(), &DeleteParams::default())
                .await;
            return Ok(Action::await_change());
        }
    }
    if app_alive && !deleting {
        let _ = ctx.kick.unbounded_send(app_ref);
        return Ok(Action::await_change());
    }
    let key = A::key_of(ns.as_deref(), &app_name);
    let _g = sh.lock(&key).await;
    finalize::<A>(&sh, &state).await?;
    // Its map users (if it owns maps) move or wait.
    if let Some(app) = ctx.apps.get(&app_ref) {
        kick_users(&ctx, ns.as_deref(), &app_uid, app.labels());
    } else {
        // Gone: its labels are unknown, so every application here with a map owner looks.
        for g in ctx.apps.state() {
            let shares = g.0.as_ref().is_ok_and(|a| {
                a.cluster_spec()
                    .is_ok_and(|s| s.map_owner_selector.is_some())
            });
            if g.namespace() == ns && shares {
                let _ = ctx.kick.unbounded_send(ObjectRef::from_obj(g.as_ref()));
            }
        }
    }
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

/// How often the sweep looks for programs whose State is gone, besides when a State or an
/// application is deleted.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// Finds programs this agent loaded for States of kind `A` that are not in its watch (the
/// State was deleted after its finalizer was removed, or its labels were changed) and
/// settles each: a State that still exists is finalized when it or its application is being
/// deleted, otherwise its application is reconciled (which puts its labels back); the
/// programs of a State that no longer exists are unloaded and its application reconciled (it
/// makes the State again). Only local calls while nothing is orphaned.
async fn sweep_orphans<A: AppKind>(ctx: &KindCtx<A>) -> Result<(), Error> {
    ctx.states_ready.wait().await;
    ctx.apps_ready.wait().await;
    let sh = &ctx.shared;
    let mut c = sh.daemon.client().await?;
    let known = |uid: &str| {
        ctx.states
            .state()
            .iter()
            .any(|s| s.uid().as_deref() == Some(uid))
    };
    let mut orphans: BTreeMap<String, (Option<String>, String, String)> = BTreeMap::new();
    for r in c.list(None, false, Default::default()).await? {
        let Some(i) = r.info else { continue };
        let (Some(uid), Some(sref), Some(app)) = (
            i.metadata.get(bpfman_k8s::names::METADATA_UUID),
            i.metadata.get(converge::METADATA_STATE),
            i.metadata.get(bpfman_k8s::names::METADATA_PROGRAM_NAME),
        ) else {
            continue;
        };
        let Some((ns, state)) = parse_state_ref::<A>(sref) else {
            continue;
        };
        if !known(uid) {
            orphans.insert(uid.clone(), (ns, state, app.clone()));
        }
    }
    for (uid, (ns, state_name, app_name)) in orphans {
        if let Err(e) = settle_orphan(ctx, &mut c, &uid, ns, &state_name, &app_name).await {
            // One orphan that cannot be settled (a forged name, an API error) stops no other.
            tracing::warn!(kind = A::KIND, state = state_name, uuid = uid, error = %e, "settling programs whose State is gone");
        }
    }
    Ok(())
}

/// One orphan of [`sweep_orphans`]: the programs with `uid` that name State `state_name`.
async fn settle_orphan<A: AppKind>(
    ctx: &KindCtx<A>,
    c: &mut bpfman_client::Client,
    uid: &str,
    ns: Option<String>,
    state_name: &str,
    app_name: &str,
) -> Result<(), Error> {
    let sh = &ctx.shared;
    let known = |uid: &str| {
        ctx.states
            .state()
            .iter()
            .any(|s| s.uid().as_deref() == Some(uid))
    };
    let key = A::key_of(ns.as_deref(), app_name);
    let app_ref = ObjectRef::<DeserializeGuard<A>>::new(app_name).within_opt(ns.clone());
    let g = sh.lock(&key).await;
    if known(uid) {
        return Ok(());
    }
    let api = A::state_api(sh.client.clone(), ns.as_deref());
    let found = if state_name.is_empty() {
        None
    } else {
        api.get_opt(state_name)
            .await?
            .filter(|s| s.uid().as_deref() == Some(uid))
    };
    match found {
        Some(s) => {
            let alive = match controller_owner(&s, A::KIND) {
                Some((name, owner_uid)) => A::guard_api(sh.client.clone(), ns.as_deref())
                    .get_opt(&name)
                    .await?
                    .is_some_and(|a| a.uid().as_deref() == Some(owner_uid.as_str())),
                None => false,
            };
            if s.meta().deletion_timestamp.is_some() || !alive {
                tracing::info!(
                    state = state_name,
                    "finalizing a State the watch does not see"
                );
                finalize::<A>(sh, &s).await?;
                if s.meta().deletion_timestamp.is_none() {
                    let _ = api.delete(state_name, &DeleteParams::default()).await;
                }
            } else {
                drop(g);
                let _ = ctx.kick.unbounded_send(app_ref);
            }
        }
        None => {
            tracing::info!(
                state = state_name,
                "unloading the programs of a State that vanished without finalizing"
            );
            converge::teardown(c, uid).await.map_err(Error::Daemon)?;
            drop(g);
            let _ = ctx.kick.unbounded_send(app_ref);
        }
    }
    Ok(())
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
    let (kick, kick_rx) = unbounded::<ObjectRef<DeserializeGuard<A>>>();
    let sweep = Arc::new(tokio::sync::Notify::new());
    // A State gone from the watch (deleted, or its labels changed): its application looks
    // again (and makes it again, or puts its labels back), and the sweep looks for programs
    // whose State vanished without finalizing.
    let on_state_delete = {
        let (kick, sweep) = (kick.clone(), sweep.clone());
        move |s: &A::State| {
            if let Some((name, _)) = controller_owner(s, A::KIND) {
                let _ = kick.unbounded_send(
                    ObjectRef::<DeserializeGuard<A>>::new(&name).within_opt(s.namespace()),
                );
            }
            sweep.notify_one();
        }
    };
    let (states, states_ready, state_stream) =
        reflected(A::state_api(sh.client.clone(), None), wc, on_state_delete);
    let state_ctl = Controller::for_stream(state_stream, states.clone());
    // An application deleted without a finalizer leaves its States to garbage collection;
    // the agent does not wait for it: a deleted application triggers its States' reconcile.
    let owned = states.clone();
    let state_ctl = state_ctl.watches(
        A::guard_api(sh.client.clone(), None),
        watcher::Config::default(),
        move |app: DeserializeGuard<A>| {
            let uid = app.uid();
            let (ns, name) = (app.namespace(), app.name_any());
            owned
                .state()
                .into_iter()
                // Its States, and States named for it whose owner reference was changed.
                .filter(|s| {
                    controller_owner(s.as_ref(), A::KIND).map(|(_, u)| u) == uid
                        || (s.namespace() == ns && agent_shaped(&s.name_any(), &name))
                })
                .map(|s| ObjectRef::from_obj(s.as_ref()))
                .collect::<Vec<_>>()
        },
    );
    let (apps, apps_ready, app_stream) = reflected(
        A::guard_api(sh.client.clone(), None),
        watcher::Config::default(),
        {
            let sweep = sweep.clone();
            move |_: &DeserializeGuard<A>| sweep.notify_one()
        },
    );
    let app_ctl = Controller::for_stream(app_stream, apps.clone());
    let ctx = Arc::new(KindCtx::<A> {
        shared: sh.clone(),
        apps,
        apps_ready,
        states,
        states_ready,
        kick: kick.clone(),
        sweep: sweep.clone(),
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
    let sweeper = {
        let ctx = ctx.clone();
        async move {
            loop {
                tokio::select! {
                    _ = ctx.sweep.notified() => {}
                    _ = tokio::time::sleep(SWEEP_INTERVAL) => {}
                }
                if let Err(e) = sweep_orphans(&ctx).await {
                    tracing::warn!(kind = A::KIND, error = %e, "sweeping programs whose State is gone");
                }
            }
        }
    };
    let states = state_ctl
        .run(reconcile_state::<A>, error_policy::<A::State, A>, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::warn!(error = %e, "State controller");
            }
        });
    futures::join!(apps, states, sweeper);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_are_dns_subdomains_and_recognisable() {
        // Cut where a '.' or '-' would end the prefix: trimmed, never ".-".
        let app = format!("{}.{}", "a".repeat(243), "b".repeat(9));
        for n in state_names(&app, "node-1", "uid") {
            assert!(n.len() <= 253, "{n}");
            assert!(!n.contains(".-") && !n.contains("--"), "{n}");
            assert!(agent_shaped(&n, &app), "{n}");
        }
        let names = state_names("web", "node-1", "uid");
        assert_eq!(names.len() as u32, STATE_NAME_ATTEMPTS);
        assert_eq!(
            names.iter().collect::<BTreeSet<_>>().len(),
            names.len(),
            "{names:?}"
        );
        assert_ne!(names[0], state_names("web", "node-2", "uid")[0]);
        assert!(!agent_shaped("zz-forged-web", "web"));
        assert!(!agent_shaped("web-0123456z", "web"));
        assert!(!agent_shaped("web-0123456789", "web"));
    }

    #[test]
    fn state_refs_round_trip_per_kind() {
        let r = state_ref::<BpfApplication>(Some("team-a"), "s-1");
        assert_eq!(
            parse_state_ref::<BpfApplication>(&r),
            Some((Some("team-a".to_string()), "s-1".to_string()))
        );
        assert_eq!(parse_state_ref::<ClusterBpfApplication>(&r), None);
        let r = state_ref::<ClusterBpfApplication>(None, "s-2");
        assert_eq!(
            parse_state_ref::<ClusterBpfApplication>(&r),
            Some((None, "s-2".to_string()))
        );
    }
}
