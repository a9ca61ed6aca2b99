//! Owns the application controllers: for each `ClusterBpfApplication` and `BpfApplication`, the
//! operator's finalizer, the one condition rolled up from the application's per-node States
//! (the rule is `rollup`'s), and an Event when the condition changes. One application is
//! reconciled per event, from what the watches hold (no list per pass, no polling): a State's
//! change wakes its owner, a Node's label or readiness change wakes every application.
//!
//! Writes: the finalizer by a JSON patch that tests the list it edits; the status by a merge
//! patch of `status.conditions` (server-side apply is refused on applications stored with
//! integer-list `globalData`, upstream's own sample form), skipped when nothing changed.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use bpfman_k8s::conditions::{AppCondition, Condition, now_rfc3339};
use bpfman_k8s::names::{
    FINALIZER_CLUSTER_AGENT, FINALIZER_NAMESPACED_AGENT, FINALIZER_OPERATOR, LABEL_HOSTNAME,
};
use bpfman_k8s::select::Selector;
use bpfman_k8s::v1alpha1::{
    BpfApplication, BpfApplicationState, ClusterBpfApplication, ClusterBpfApplicationState,
};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::rollup::{AppView, NodeView, StateView, rollup};

/// Errors of one reconcile; each is retried.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// One application kind and its State kind, as the operator sees them.
pub trait AppKind:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug + Send + Sync + 'static
{
    type State: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static;
    const KIND: &'static str;
    /// The agent's finalizer on this kind's States.
    const AGENT_FINALIZER: &'static str;
    fn node_selector(&self) -> &LabelSelector;
    fn conditions(&self) -> Vec<Condition>;
    fn state_conditions(s: &Self::State) -> Vec<Condition>;
    fn api(client: Client, ns: Option<&str>) -> Api<Self>;
    /// Every application of the kind, read leniently.
    fn guard_api(client: Client) -> Api<DeserializeGuard<Self>> {
        Api::all(client)
    }
    /// Every State of the kind.
    fn state_api(client: Client) -> Api<Self::State> {
        Api::all(client)
    }
}

impl AppKind for ClusterBpfApplication {
    type State = ClusterBpfApplicationState;
    const KIND: &'static str = "ClusterBpfApplication";
    const AGENT_FINALIZER: &'static str = FINALIZER_CLUSTER_AGENT;
    fn node_selector(&self) -> &LabelSelector {
        &self.spec.node_selector
    }
    fn conditions(&self) -> Vec<Condition> {
        self.status.clone().unwrap_or_default().conditions
    }
    fn state_conditions(s: &Self::State) -> Vec<Condition> {
        s.status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default()
    }
    fn api(client: Client, _: Option<&str>) -> Api<Self> {
        Api::all(client)
    }
}

impl AppKind for BpfApplication {
    type State = BpfApplicationState;
    const KIND: &'static str = "BpfApplication";
    const AGENT_FINALIZER: &'static str = FINALIZER_NAMESPACED_AGENT;
    fn node_selector(&self) -> &LabelSelector {
        &self.spec.node_selector
    }
    fn conditions(&self) -> Vec<Condition> {
        self.status.clone().unwrap_or_default().conditions
    }
    fn state_conditions(s: &Self::State) -> Vec<Condition> {
        s.status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default()
    }
    fn api(client: Client, ns: Option<&str>) -> Api<Self> {
        match ns {
            Some(ns) => Api::namespaced(client, ns),
            None => Api::all(client),
        }
    }
}

/// What every application reconcile reads: the Nodes and the kind's States, as watched.
pub struct Ctx<A: AppKind> {
    pub client: Client,
    pub nodes: Store<Node>,
    pub states: Store<A::State>,
    pub recorder: Recorder,
}

/// The application owning a State: its controller reference of the kind.
fn owner_of<S: Resource>(s: &S, kind: &str) -> Option<(String, String)> {
    s.meta()
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.kind == kind && o.controller == Some(true))
        .map(|o| (o.name.clone(), o.uid.clone()))
}

/// Whether a Node's Ready condition is True.
pub fn node_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// What of a Node wakes every application: its labels and its readiness.
fn node_key(n: &Node) -> (String, BTreeMap<String, String>, bool) {
    (n.name_any(), n.labels().clone(), node_ready(n))
}

async fn reconcile<A: AppKind>(
    guard: Arc<DeserializeGuard<A>>,
    ctx: Arc<Ctx<A>>,
) -> Result<Action, Error> {
    let app = match &guard.0 {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(kind = A::KIND, error = %e, "an application that does not read as its kind: skipped");
            return Ok(Action::await_change());
        }
    };
    let ns = app.namespace();
    let name = app.name_any();
    let api = A::api(ctx.client.clone(), ns.as_deref());
    let deleting = app.meta().deletion_timestamp.is_some();
    let has_fin = app.finalizers().iter().any(|f| f == FINALIZER_OPERATOR);
    if !deleting && !has_fin {
        // Upstream's finalizer: the application stays until every node has let go of it,
        // so its final condition can say which node could not.
        crate::finalizer::add(&api, app, FINALIZER_OPERATOR).await?;
        return Ok(Action::await_change());
    }
    let uid = app.uid().unwrap_or_default();
    let selector = Selector::new(app.node_selector());
    let nodes: Vec<NodeView> = ctx
        .nodes
        .state()
        .iter()
        .map(|n| NodeView {
            name: n.name_any(),
            ready: node_ready(n),
            selected: selector.as_ref().is_ok_and(|s| s.matches(n.labels())),
        })
        .collect();
    let states: Vec<StateView> = ctx
        .states
        .state()
        .iter()
        .filter(|s| {
            s.namespace() == ns && owner_of(s.as_ref(), A::KIND).is_some_and(|(_, u)| u == uid)
        })
        .map(|s| StateView {
            name: s.name_any(),
            node: s.labels().get(LABEL_HOSTNAME).cloned().unwrap_or_default(),
            // A condition whose status is not True does not hold: "Success" with status False
            // is not converged (it reads as its type and status, neither success nor failure).
            condition: A::state_conditions(s).first().map(|c| {
                let t = if c.status == "True" {
                    c.type_.clone()
                } else {
                    format!("{}={}", c.type_, c.status)
                };
                (t, c.message.clone(), c.observed_generation)
            }),
            agent_finalizer: s.finalizers().iter().any(|f| f == A::AGENT_FINALIZER),
        })
        .collect();
    let view = AppView {
        generation: app.meta().generation,
        deleting,
    };
    let mut rolled = rollup(&view, &nodes, &states);
    if let Err(e) = &selector {
        rolled.condition = AppCondition::Error;
        rolled.message = crate::rollup::bound(format!("The nodeSelector is invalid: {e}; fix it"));
    }
    if rolled.release {
        if has_fin {
            crate::finalizer::remove(&api, app, FINALIZER_OPERATOR).await?;
            tracing::info!(
                kind = A::KIND,
                app = name,
                "deleted on every node: finalizer released"
            );
        }
        return Ok(Action::await_change());
    }
    let old = app.conditions();
    let cur = old.first();
    let same = cur.is_some_and(|c| {
        c.type_ == rolled.condition.type_()
            && c.message == rolled.message
            && c.observed_generation == view.generation
            && old.len() == 1
    });
    if same {
        return Ok(Action::await_change());
    }
    let mut cond =
        rolled
            .condition
            .condition(Some(&rolled.message), &now_rfc3339(), view.generation);
    let changed_type = cur.is_none_or(|c| c.type_ != cond.type_);
    if let Some(c) = cur.filter(|_| !changed_type) {
        cond.last_transition_time = c.last_transition_time.clone();
    }
    let patch = serde_json::json!({"status": {"conditions": [cond]}});
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    if changed_type {
        let warn = matches!(
            rolled.condition,
            AppCondition::Error | AppCondition::DeleteError
        );
        let ev = Event {
            type_: if warn {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: rolled.condition.type_().to_string(),
            // The API server takes at most 1024 bytes of note.
            note: Some(crate::rollup::cut(rolled.message.clone(), 1024)),
            action: "Rollup".to_string(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&ev, &app.object_ref(&())).await {
            tracing::warn!(kind = A::KIND, app = name, error = %e, "publishing an event");
        }
    }
    Ok(Action::await_change())
}

/// [`reconcile`], with an application deleted meanwhile (its patch answered 404) done.
async fn reconcile_gone_ok<A: AppKind>(
    guard: Arc<DeserializeGuard<A>>,
    ctx: Arc<Ctx<A>>,
) -> Result<Action, Error> {
    match reconcile(guard, ctx).await {
        Err(Error::Kube(kube::Error::Api(s))) if s.code == 404 => Ok(Action::await_change()),
        r => r,
    }
}

fn error_policy<A: AppKind>(_: Arc<DeserializeGuard<A>>, e: &Error, _: Arc<Ctx<A>>) -> Action {
    tracing::warn!(kind = A::KIND, error = %e, "application reconcile failed: retrying");
    Action::requeue(Duration::from_secs(2))
}

/// Runs one kind's application controller until the process ends.
pub async fn run_kind<A: AppKind>(
    client: Client,
    nodes: Store<Node>,
    nodes_changed: futures::channel::mpsc::UnboundedReceiver<()>,
    recorder: Recorder,
) {
    let (states, writer) = reflector::store::<A::State>();
    let state_stream = watcher(A::state_api(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    let ctx = Arc::new(Ctx::<A> {
        client: client.clone(),
        nodes,
        states,
        recorder,
    });
    Controller::new(A::guard_api(client.clone()), watcher::Config::default())
        .watches_stream(state_stream, |s: A::State| {
            owner_of(&s, A::KIND).map(|(name, _)| {
                let r = ObjectRef::<DeserializeGuard<A>>::new(&name);
                match s.namespace() {
                    Some(ns) => r.within(&ns),
                    None => r,
                }
            })
        })
        .reconcile_all_on(nodes_changed)
        .run(reconcile_gone_ok::<A>, error_policy::<A>, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "application controller");
            }
        })
        .await;
}

/// Watches the Nodes into a store, and sends on every returned channel when a Node's labels or
/// readiness change (or a Node comes or goes).
pub fn watch_nodes(
    client: Client,
    subscribers: usize,
) -> (
    Store<Node>,
    Vec<futures::channel::mpsc::UnboundedReceiver<()>>,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (store, writer) = reflector::store::<Node>();
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..subscribers)
        .map(|_| futures::channel::mpsc::unbounded::<()>())
        .unzip();
    let stream = watcher(Api::<Node>::all(client), watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    let task = async move {
        let mut last: BTreeMap<String, (BTreeMap<String, String>, bool)> = BTreeMap::new();
        let mut s = std::pin::pin!(stream);
        while let Some(ev) = s.next().await {
            let changed = match ev {
                Ok(watcher::Event::InitApply(n)) => {
                    let (name, labels, ready) = node_key(&n);
                    last.insert(name, (labels, ready));
                    false
                }
                Ok(watcher::Event::Apply(n)) => {
                    let (name, labels, ready) = node_key(&n);
                    let now = (labels, ready);
                    last.insert(name, now.clone()) != Some(now)
                }
                Ok(watcher::Event::Delete(n)) => last.remove(&n.name_any()).is_some(),
                Ok(watcher::Event::InitDone) => true,
                Ok(watcher::Event::Init) => false,
                Err(e) => {
                    tracing::warn!(error = %e, "watching Nodes");
                    false
                }
            };
            if changed {
                for t in &txs {
                    let _ = t.unbounded_send(());
                }
            }
        }
    };
    (store, rxs, task)
}
