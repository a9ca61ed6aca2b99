//! Owns one application's convergence on this node, against the daemon: unload when the node
//! is not selected, load the programs in one request (reloading when the program list, the
//! bytecode, the global data or the map owner changed), attach the links the spec expands to,
//! detach the ones it no longer does (and any link of ours the State does not know: a crash
//! between attach and status write), and the State status that says exactly what happened.
//!
//! Programs are found by their `bpfman.io/uuid` metadata (the State's UID), links by theirs
//! (a uuid derived from the State, the program and the link, so a link attached just before a
//! crash is recognised and kept rather than attached twice).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use bpfman_client::{Client, Load};
use bpfman_k8s::conditions::{StateCondition, now_rfc3339};
use bpfman_k8s::names::{METADATA_PROGRAM_NAME, METADATA_UUID};
use bpfman_k8s::v1alpha1::{
    AppLoadStatus, ClusterBpfApplicationSpec, ClusterBpfApplicationStateStatus,
    ClusterProgramState, Condition, LinkStateCommon, LinkStatus, ProgramLinkStatus, ProgramType,
    PullPolicy,
};
use bpfman_types::{ProgramKind, ProgramSpec};
use sha2::{Digest, Sha256};

use crate::expand::{self, Detail, NodeView};
use crate::select::Selector;

/// Program metadata: a digest of what was loaded (sources, programs, global data, map owner),
/// so a change to any of them reloads.
pub const METADATA_LOAD_DIGEST: &str = "bpfman.io/loadDigest";

/// Program metadata: which State loaded the program (`<kind key>/[<namespace>/]<name>`), so a
/// program whose State vanished without finalizing is found and taken down.
pub const METADATA_STATE: &str = "bpfman.io/agentState";

/// The most a condition message holds (the CRD's limit is 32768 characters).
pub const MESSAGE_MAX: usize = 32000;

/// The condition reason when a program's links matched nothing on this node.
pub const REASON_NO_MATCHING_LINKS: &str = "NoMatchingLinks";

/// How long after a failure the application is tried again without any event.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// Everything converging needs besides the daemon.
pub struct Input<'a> {
    pub app_name: &'a str,
    pub spec: Result<ClusterBpfApplicationSpec, String>,
    pub node: &'a NodeView,
    pub state_uid: &'a str,
    /// The State as program metadata names it (see [`METADATA_STATE`]).
    pub state_ref: &'a str,
    pub old: Option<&'a ClusterBpfApplicationStateStatus>,
    /// The program id whose maps to share, or why there is none yet.
    pub map_owner: Result<Option<u32>, MapOwnerWait>,
    /// Registry credentials for the image, or why they could not be read.
    pub pull_auth: Result<Option<(String, String)>, String>,
    pub generation: Option<i64>,
}

/// Why the map owner's id is not known.
#[derive(Debug, Clone)]
pub enum MapOwnerWait {
    /// Retry when the owner converges.
    Pending(String),
    /// The selector is wrong.
    Error(String),
}

/// The outcome: the status to write, when to look again, and the ids to watch.
pub struct Converged {
    pub status: ClusterBpfApplicationStateStatus,
    pub retry: Option<Duration>,
    pub programs: BTreeSet<u32>,
    pub links: BTreeSet<u32>,
}

fn status(
    node: &str,
    load: AppLoadStatus,
    programs: Vec<ClusterProgramState>,
    cond: Condition,
) -> ClusterBpfApplicationStateStatus {
    ClusterBpfApplicationStateStatus {
        update_count: 0,
        node: node.to_string(),
        app_load_status: load,
        programs,
        conditions: vec![cond],
    }
}

fn cond(c: StateCondition, msg: &str, generation: Option<i64>) -> Condition {
    c.condition(Some(&bounded(msg)), &now_rfc3339(), generation)
}

/// `msg`, cut to [`MESSAGE_MAX`] characters (saying so) so the status is always written.
pub fn bounded(msg: &str) -> std::borrow::Cow<'_, str> {
    match msg.char_indices().nth(MESSAGE_MAX) {
        None => msg.into(),
        Some((at, _)) => format!(
            "{} ... (cut: the message has {} characters; the agent's log has it whole)",
            &msg[..at],
            msg.chars().count()
        )
        .into(),
    }
}

/// A failure: the status says `msg` and, truthfully, what stays loaded (see [`kept`]).
async fn failed(
    c: &mut Client,
    input: &Input<'_>,
    held: &BTreeMap<u32, bpfman_client::v1_proto::ProgramInfo>,
    load: AppLoadStatus,
    msg: String,
    cnd: StateCondition,
) -> Converged {
    let (programs, msg) = match kept(c, input, held).await {
        Ok(p) => (p, msg),
        Err(e) => (Vec::new(), format!("{msg}; and {e}")),
    };
    let ids: BTreeSet<u32> = programs.iter().filter_map(program_id).collect();
    Converged {
        status: status(
            &input.node.name,
            load,
            programs,
            cond(cnd, &msg, input.generation),
        ),
        retry: Some(RETRY_AFTER_FAILURE),
        programs: ids,
        links: BTreeSet::new(),
    }
}

fn program_id(p: &ClusterProgramState) -> Option<u32> {
    p.program_id
}

/// What the State says after a failure that loads nothing new: the programs this State holds
/// stay (a refused update does not take down what runs) when the old status records exactly
/// them, so the status keeps describing them; otherwise they are unloaded and every spec
/// program is listed as pending.
async fn kept(
    c: &mut Client,
    input: &Input<'_>,
    held: &BTreeMap<u32, bpfman_client::v1_proto::ProgramInfo>,
) -> Result<Vec<ClusterProgramState>, String> {
    if held.is_empty() {
        return Ok(pending_programs(input));
    }
    if let Some(old) = input.old {
        let recorded: BTreeSet<u32> = old.programs.iter().filter_map(program_id).collect();
        if recorded.len() == old.programs.len() && recorded.iter().eq(held.keys()) {
            return Ok(old.programs.clone());
        }
    }
    teardown(c, input.state_uid).await?;
    Ok(pending_programs(input))
}

/// One entry per spec program, nothing loaded.
fn pending_programs(input: &Input<'_>) -> Vec<ClusterProgramState> {
    let Ok(spec) = &input.spec else {
        return Vec::new();
    };
    spec.programs
        .iter()
        .map(|p| {
            crate::status::program_entry(
                &p.name,
                &p.type_,
                fentry_fn(p),
                None,
                ProgramLinkStatus::Pending,
                Vec::new(),
            )
        })
        .collect()
}

fn fentry_fn(p: &bpfman_k8s::v1alpha1::ClusterProgram) -> Option<&str> {
    p.fentry
        .as_ref()
        .or(p.fexit.as_ref())
        .map(|f| f.function.as_str())
}

type Held = BTreeMap<u32, bpfman_client::v1_proto::ProgramInfo>;

/// The programs of this State in the daemon, by id.
pub async fn ours(c: &mut Client, state_uid: &str) -> Result<Held, bpfman_client::Error> {
    let list = c
        .list(
            None,
            false,
            [(METADATA_UUID.to_string(), state_uid.to_string())].into(),
        )
        .await?;
    Ok(list
        .into_iter()
        .filter_map(|r| Some((r.kernel_info?.id, r.info?)))
        .collect())
}

/// This State's programs, after unloading any program an earlier State of the same name
/// loaded (a State deleted without its finalizer, then made again: without this the
/// application would run twice).
async fn held(c: &mut Client, input: &Input<'_>) -> Result<Held, bpfman_client::Error> {
    let list = c
        .list(
            None,
            false,
            [(
                METADATA_PROGRAM_NAME.to_string(),
                input.app_name.to_string(),
            )]
            .into(),
        )
        .await?;
    let mut ours = Held::new();
    for r in list {
        let (Some(k), Some(i)) = (r.kernel_info, r.info) else {
            continue;
        };
        if i.metadata.get(METADATA_UUID).map(String::as_str) == Some(input.state_uid) {
            ours.insert(k.id, i);
        } else if i.metadata.get(METADATA_STATE).map(String::as_str) == Some(input.state_ref) {
            tracing::info!(
                app = input.app_name,
                program = k.id,
                "unloading a program of an earlier State of this name (it vanished without finalizing)"
            );
            match teardown(
                c,
                i.metadata
                    .get(METADATA_UUID)
                    .map(String::as_str)
                    .unwrap_or_default(),
            )
            .await
            {
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(app = input.app_name, error = %e, "unloading an earlier State's program")
                }
            }
        }
    }
    Ok(ours)
}

/// Unloads every program of this State (the daemon detaches their links first). Programs of
/// other States sharing their maps (map users, loaded by an agent) are unloaded first: the
/// daemon keeps a map owner while its maps are in use, and the users' own reconciles load
/// them again onto the owner's next maps or wait for it.
pub async fn teardown(c: &mut Client, state_uid: &str) -> Result<(), String> {
    if state_uid.is_empty() {
        return Ok(());
    }
    let progs = ours(c, state_uid).await.map_err(|e| {
        format!(
            "listing this application's programs failed: {}",
            e.message()
        )
    })?;
    if progs.is_empty() {
        return Ok(());
    }
    let mut errs = Vec::new();
    if progs.values().any(|i| !i.map_used_by.is_empty()) {
        let users: Vec<u32> = c
            .list(None, false, Default::default())
            .await
            .map_err(|e| {
                format!(
                    "listing the programs sharing this application's maps failed: {}",
                    e.message()
                )
            })?
            .into_iter()
            .filter_map(|r| Some((r.kernel_info?.id, r.info?)))
            .filter(|(_, i)| {
                i.map_owner_id.is_some_and(|o| progs.contains_key(&o))
                    && i.metadata
                        .get(METADATA_UUID)
                        .is_some_and(|u| u != state_uid)
            })
            .map(|(id, _)| id)
            .collect();
        for id in users {
            if let Err(e) = c.unload(id).await
                && !e.is_not_found()
            {
                errs.push(format!(
                    "unloading map user {id} first failed: {}",
                    e.message()
                ));
            }
        }
    }
    for id in progs.keys() {
        if let Err(e) = c.unload(*id).await
            && !e.is_not_found()
        {
            errs.push(format!("unloading program {id} failed: {}", e.message()));
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.join("; "))
    }
}

/// A uuid (in the usual 8-4-4-4-12 form) derived from `parts`.
pub fn derived_uuid(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    let x: String = h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        "{}-{}-5{}-{}-{}",
        &x[0..8],
        &x[8..12],
        &x[13..16],
        &x[16..20],
        &x[20..32]
    )
}

fn netns_inode(p: &str) -> Option<(u64, u64)> {
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

/// Whether a recorded link is the wanted one: the same fields, the network namespace
/// compared by inode when the paths differ (two PIDs of one pod name one namespace).
fn same_link(recorded: &Detail, wanted: &Detail) -> bool {
    if recorded == wanted {
        return true;
    }
    let strip = |d: &Detail| -> (Detail, Option<String>) {
        let mut d = d.clone();
        let ns = match &mut d {
            Detail::Xdp { netns, .. } | Detail::Tc { netns, .. } | Detail::Tcx { netns, .. } => {
                netns.take()
            }
            _ => None,
        };
        (d, ns)
    };
    let (a, an) = strip(recorded);
    let (b, bn) = strip(wanted);
    match (an, bn) {
        (Some(x), Some(y)) if a == b => netns_inode(&x).is_some_and(|i| Some(i) == netns_inode(&y)),
        _ => false,
    }
}

fn kind_of(t: &ProgramType) -> Option<ProgramKind> {
    t.bpfman_kind().and_then(|k| k.parse().ok())
}

fn pull_policy(p: &PullPolicy) -> bpfman_types::PullPolicy {
    match p {
        PullPolicy::Always => bpfman_types::PullPolicy::Always,
        PullPolicy::Never => bpfman_types::PullPolicy::Never,
        _ => bpfman_types::PullPolicy::IfNotPresent,
    }
}

/// Checks the spec as a whole; the error says what to change.
fn check(spec: &ClusterBpfApplicationSpec) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut names = BTreeSet::new();
    for p in &spec.programs {
        if !names.insert(p.name.as_str()) {
            return Err(format!(
                "program {} is listed twice: each program of an application needs its own name",
                p.name
            ));
        }
        if kind_of(&p.type_).is_none() {
            return Err(format!(
                "program {}: type '{}' is not one this agent knows",
                p.name,
                p.type_.as_str()
            ));
        }
        if matches!(p.type_, ProgramType::FEntry | ProgramType::FExit) && fentry_fn(p).is_none() {
            return Err(format!(
                "program {}: {} needs its member with the kernel function",
                p.name,
                p.type_.as_str()
            ));
        }
    }
    match (&spec.byte_code.path, &spec.byte_code.image) {
        (Some(_), Some(_)) | (None, None) => {
            return Err("byteCode must give exactly one of path and image".into());
        }
        (Some(path), None) => {
            if !path.starts_with('/')
                || path
                    .split('/')
                    .any(|c| c == ".." || c == "." || c.contains('\0'))
                || path.chars().any(char::is_control)
            {
                return Err(format!(
                    "byteCode.path {path:?} must be an absolute path without '.', '..' or control characters"
                ));
            }
        }
        (None, Some(img)) => {
            if img.url.is_empty()
                || img.url.chars().any(|c| c.is_whitespace() || c.is_control())
                || img.url.contains("://")
            {
                return Err(format!(
                    "byteCode.image.url {:?} is not an image reference (like quay.io/org/name:tag)",
                    img.url
                ));
            }
            if !img.image_pull_policy.is_known() {
                return Err(format!(
                    "byteCode.image.imagePullPolicy '{}' is unknown: use Always, IfNotPresent or Never",
                    img.image_pull_policy.as_str()
                ));
            }
        }
    }
    let mut globals = BTreeMap::new();
    for (k, v) in spec.global_data.iter().flatten() {
        let b = v
            .bytes()
            .map_err(|e| format!("globalData {k}: {e}: give base64 or a list of bytes"))?;
        globals.insert(k.clone(), b.to_vec());
    }
    Ok(globals)
}

/// Where the bytecode comes from, in words for messages.
fn source(spec: &ClusterBpfApplicationSpec) -> String {
    match (&spec.byte_code.path, &spec.byte_code.image) {
        (Some(p), _) => format!("file {p}"),
        (_, Some(i)) => format!("image {}", i.url),
        _ => "no bytecode".into(),
    }
}

/// Converges the application on this node.
pub async fn converge(c: &mut Client, input: Input<'_>) -> Result<Converged, bpfman_client::Error> {
    let node = input.node;
    let existing = match held(c, &input).await {
        Ok(h) => h,
        Err(e) if e.is_transport() => return Err(e),
        Err(e) => {
            // Nothing can be known (or loaded) here while the daemon refuses even to list.
            return Ok(failed(
                c,
                &input,
                &Held::new(),
                AppLoadStatus::NotLoaded,
                format!(
                    "the daemon on node {} refused listing this application's programs: {}",
                    node.name,
                    e.message()
                ),
                StateCondition::Error,
            )
            .await);
        }
    };
    let spec = match &input.spec {
        Ok(s) => s,
        Err(e) => {
            return Ok(failed(
                c,
                &input,
                &existing,
                AppLoadStatus::NotLoaded,
                e.clone(),
                StateCondition::Error,
            )
            .await);
        }
    };
    let selected = match Selector::new(&spec.node_selector) {
        Ok(s) => s.matches(&node.labels),
        Err(e) => {
            return Ok(failed(
                c,
                &input,
                &existing,
                AppLoadStatus::NotLoaded,
                format!("nodeSelector: {e}"),
                StateCondition::Error,
            )
            .await);
        }
    };
    if !selected {
        return Ok(match teardown(c, input.state_uid).await {
            Ok(()) => Converged {
                status: status(
                    &node.name,
                    AppLoadStatus::NotSelected,
                    Vec::new(),
                    cond(
                        StateCondition::NotSelected,
                        &format!(
                            "node {} is not selected by the application's nodeSelector: nothing is loaded here",
                            node.name
                        ),
                        input.generation,
                    ),
                ),
                retry: None,
                programs: BTreeSet::new(),
                links: BTreeSet::new(),
            },
            Err(e) => {
                failed(
                    c,
                    &input,
                    &existing,
                    AppLoadStatus::UnloadError,
                    format!("the node is no longer selected but {e}"),
                    StateCondition::UnloadError,
                )
                .await
            }
        });
    }
    let globals = match check(spec) {
        Ok(g) => g,
        Err(e) => {
            return Ok(failed(
                c,
                &input,
                &existing,
                AppLoadStatus::NotLoaded,
                e,
                StateCondition::Error,
            )
            .await);
        }
    };
    let map_owner = match &input.map_owner {
        Ok(m) => *m,
        Err(MapOwnerWait::Pending(m)) => {
            // Loaded onto maps whose owner is gone or not loaded here: unloaded, so the owner
            // can go (or be reloaded); loaded again once it is (its converging kicks this).
            let msg = match teardown(c, input.state_uid).await {
                Ok(()) => m.clone(),
                Err(e) => format!("{m}; and {e}"),
            };
            let mut f = failed(
                c,
                &input,
                &Held::new(),
                AppLoadStatus::NotLoaded,
                msg,
                StateCondition::Pending,
            )
            .await;
            // Its owner's converging kicks it; the retry covers a kick missed.
            f.retry = Some(RETRY_AFTER_FAILURE);
            return Ok(f);
        }
        Err(MapOwnerWait::Error(m)) => {
            return Ok(failed(
                c,
                &input,
                &existing,
                AppLoadStatus::NotLoaded,
                m.clone(),
                StateCondition::Error,
            )
            .await);
        }
    };

    // ---- load ----
    let programs: Vec<ProgramSpec> = spec
        .programs
        .iter()
        .filter_map(|p| {
            Some(ProgramSpec {
                name: p.name.clone(),
                kind: kind_of(&p.type_)?,
                attach_fn: fentry_fn(p).map(str::to_string),
            })
        })
        .collect();
    let digest = {
        let v = serde_json::json!({
            "bytecode": [spec.byte_code.path, spec.byte_code.image.as_ref().map(|i| &i.url)],
            "programs": programs.iter().map(|p| (p.name.clone(), p.kind.as_str(), p.attach_fn.clone())).collect::<Vec<_>>(),
            "globals": globals,
            "mapOwner": map_owner,
        });
        derived_uuid(&[&v.to_string()])
    };
    let reusable = existing.len() == programs.len()
        && programs
            .iter()
            .all(|p| existing.values().filter(|i| i.name == p.name).count() == 1)
        && existing
            .values()
            .all(|i| match i.metadata.get(METADATA_LOAD_DIGEST) {
                Some(d) => *d == digest,
                // Loaded by upstream's agent: compare what the daemon recorded.
                None => loaded_as(i, spec, &globals, map_owner),
            });
    let mut ids: BTreeMap<String, u32> = BTreeMap::new();
    if reusable {
        for (id, i) in &existing {
            ids.insert(i.name.clone(), *id);
        }
    } else {
        let load = Load {
            programs: programs.clone(),
            global_data: globals.clone(),
            metadata: [
                (METADATA_UUID.to_string(), input.state_uid.to_string()),
                (
                    METADATA_PROGRAM_NAME.to_string(),
                    input.app_name.to_string(),
                ),
                (METADATA_LOAD_DIGEST.to_string(), digest.clone()),
                (METADATA_STATE.to_string(), input.state_ref.to_string()),
            ]
            .into(),
            map_owner_id: map_owner,
            uuid: Some(input.state_uid.to_string()),
        };
        let req = match (&spec.byte_code.path, &spec.byte_code.image) {
            (Some(p), _) => load.from_file(p),
            (_, Some(img)) => {
                let auth = match &input.pull_auth {
                    Ok(a) => a.clone(),
                    Err(e) => {
                        return Ok(failed(
                            c,
                            &input,
                            &existing,
                            AppLoadStatus::LoadError,
                            format!("the image pull secret: {e}"),
                            StateCondition::Error,
                        )
                        .await);
                    }
                };
                load.from_image(&img.url, pull_policy(&img.image_pull_policy), auth)
            }
            (None, None) => {
                return Ok(failed(
                    c,
                    &input,
                    &existing,
                    AppLoadStatus::NotLoaded,
                    "byteCode gives neither path nor image".into(),
                    StateCondition::Error,
                )
                .await);
            }
        };
        if !existing.is_empty() {
            tracing::info!(
                app = input.app_name,
                "the program list, bytecode, global data or map owner changed: reloading"
            );
            if let Err(e) = teardown(c, input.state_uid).await {
                let now = ours(c, input.state_uid).await.unwrap_or_default();
                return Ok(failed(
                    c,
                    &input,
                    &now,
                    AppLoadStatus::UnloadError,
                    format!("the application changed and must be reloaded, but {e}"),
                    StateCondition::Error,
                )
                .await);
            }
        }
        match c.load(req).await {
            Ok(r) => {
                for p in r.programs {
                    if let (Some(i), Some(k)) = (p.info, p.kernel_info) {
                        ids.insert(i.name, k.id);
                    }
                }
            }
            Err(e) if e.is_transport() => return Err(e),
            Err(e) => {
                return Ok(failed(
                    c,
                    &input,
                    &Held::new(),
                    AppLoadStatus::LoadError,
                    format!(
                        "loading {} on node {} failed: {}",
                        source(spec),
                        node.name,
                        e.message()
                    ),
                    StateCondition::Error,
                )
                .await);
            }
        }
    }

    // ---- attach ----
    let old_programs: HashMap<(&str, &str), &ClusterProgramState> = input
        .old
        .map(|o| {
            o.programs
                .iter()
                .map(|p| ((p.name.as_str(), p.type_.as_str()), p))
                .collect()
        })
        .unwrap_or_default();
    let mut entries = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    let mut unmatched: Vec<String> = Vec::new();
    let mut all_programs = BTreeSet::new();
    let mut all_links = BTreeSet::new();
    for p in &spec.programs {
        let Some(&pid) = ids.get(&p.name) else {
            problems.push(format!(
                "program {}: the daemon loaded the object but returned no program of that name",
                p.name
            ));
            continue;
        };
        all_programs.insert(pid);
        let ex = expand::expand(p, node);
        let spec_links = ex.wants.len() + ex.unmatched.len();
        let recorded = old_programs
            .get(&(p.name.as_str(), p.type_.as_str()))
            .map(|s| crate::status::recorded(s))
            .unwrap_or_default();
        let daemon_links: HashMap<u32, Option<String>> = match c.list_links(Some(pid)).await {
            Ok(l) => l
                .into_iter()
                .map(|l| (l.link_id, l.metadata.get(METADATA_UUID).cloned()))
                .collect(),
            Err(e) if e.is_transport() => return Err(e),
            Err(e) => {
                problems.push(format!(
                    "program {}: the daemon refused listing its links: {}",
                    p.name,
                    e.message()
                ));
                entries.push(crate::status::program_entry(
                    &p.name,
                    &p.type_,
                    fentry_fn(p),
                    Some(pid).filter(|id| *id <= i32::MAX as u32),
                    ProgramLinkStatus::Error,
                    Vec::new(),
                ));
                continue;
            }
        };
        let mut links: Vec<(Detail, LinkStateCommon)> = Vec::new();
        let mut prog_ok = ex.problems.is_empty();
        // 1. Match each wanted link to what was recorded (or to a link of ours carrying its
        //    uuid: attached just before a crash).
        let mut used = vec![false; recorded.len()];
        let mut plan: Vec<(&expand::Want, String, Option<u32>)> = Vec::new();
        for w in &ex.wants {
            let prev = recorded
                .iter()
                .enumerate()
                .find(|(i, (d, _))| !used[*i] && same_link(d, &w.detail));
            let uuid = match prev {
                Some((i, (_, common))) => {
                    used[i] = true;
                    common.uuid.clone()
                }
                None => derived_uuid(&[input.state_uid, &p.name, &format!("{:?}", w.detail)]),
            };
            let have = prev
                .and_then(|(_, (_, common))| common.link_id)
                .filter(|id| {
                    daemon_links
                        .get(id)
                        .is_some_and(|u| u.as_deref().is_none_or(|u| u == uuid))
                })
                .or_else(|| {
                    daemon_links
                        .iter()
                        .find(|(_, u)| u.as_deref() == Some(uuid.as_str()))
                        .map(|(id, _)| *id)
                });
            plan.push((w, uuid, have));
        }
        let keep: BTreeSet<u32> = plan.iter().filter_map(|(_, _, h)| *h).collect();
        // 2. Detach first what is no longer wanted (recorded, or ours and unrecorded): a hook
        //    without a dispatcher takes one program, so a moved link must leave before its
        //    successor comes.
        for (i, (d, common)) in recorded.iter().enumerate() {
            if used[i] {
                continue;
            }
            let Some(id) = common.link_id.filter(|id| daemon_links.contains_key(id)) else {
                continue;
            };
            if keep.contains(&id) {
                continue;
            }
            match c.detach(id).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) if e.is_transport() => return Err(e),
                Err(e) => {
                    prog_ok = false;
                    problems.push(format!(
                        "program {}: detaching link {id} failed: {}",
                        p.name,
                        e.message()
                    ));
                    links.push((
                        d.clone(),
                        LinkStateCommon {
                            should_attach: false,
                            link_status: LinkStatus::DetachError,
                            ..common.clone()
                        },
                    ));
                }
            }
        }
        let still: BTreeSet<u32> = links.iter().filter_map(|(_, c)| c.link_id).collect();
        for id in daemon_links.keys() {
            if !keep.contains(id) && !still.contains(id) {
                match c.detach(*id).await {
                    Ok(()) => {}
                    Err(e) if e.is_transport() => return Err(e),
                    Err(_) => {}
                }
            }
        }
        // 3. Attach what is missing.
        for (w, uuid, have) in plan {
            let (link_id, st) = match have {
                Some(id) => (Some(id), LinkStatus::Attached),
                None => match c
                    .attach(
                        pid,
                        &w.attach,
                        [(METADATA_UUID.to_string(), uuid.clone())].into(),
                    )
                    .await
                {
                    Ok(id) => (Some(id), LinkStatus::Attached),
                    Err(e) if e.is_transport() => return Err(e),
                    Err(e) => {
                        prog_ok = false;
                        problems.push(format!(
                            "program {}: attaching to {} failed: {}",
                            p.name,
                            w.attach.target(),
                            e.message()
                        ));
                        (None, LinkStatus::AttachError)
                    }
                },
            };
            if let Some(id) = link_id {
                all_links.insert(id);
            }
            links.push((
                w.detail.clone(),
                LinkStateCommon {
                    should_attach: true,
                    uuid,
                    link_id: link_id.filter(|id| *id <= i32::MAX as u32),
                    link_status: st,
                },
            ));
        }
        problems.extend(ex.problems.iter().cloned());
        let nothing_matched = spec_links > 0 && ex.wants.is_empty() && ex.problems.is_empty();
        if nothing_matched {
            unmatched.extend(ex.unmatched.iter().cloned());
        }
        let pls = if !prog_ok {
            ProgramLinkStatus::Error
        } else if nothing_matched {
            ProgramLinkStatus::Pending
        } else {
            ProgramLinkStatus::Success
        };
        entries.push(crate::status::program_entry(
            &p.name,
            &p.type_,
            fentry_fn(p),
            Some(pid).filter(|id| *id <= i32::MAX as u32),
            pls,
            links,
        ));
    }
    let (condition, retry) = if !problems.is_empty() {
        (
            cond(
                StateCondition::Error,
                &problems.join("; "),
                input.generation,
            ),
            Some(RETRY_AFTER_FAILURE),
        )
    } else if !unmatched.is_empty() {
        let mut c = cond(
            StateCondition::Pending,
            &format!("loaded, but {}", unmatched.join("; ")),
            input.generation,
        );
        c.reason = REASON_NO_MATCHING_LINKS.into();
        (c, None)
    } else {
        (
            cond(
                StateCondition::Success,
                StateCondition::Success.default_message(),
                input.generation,
            ),
            None,
        )
    };
    Ok(Converged {
        status: status(&node.name, AppLoadStatus::LoadSuccess, entries, condition),
        retry,
        programs: all_programs,
        links: all_links,
    })
}

/// Whether a program the daemon holds was loaded from this spec's bytecode, global data and
/// map owner (for programs without the load digest: upstream's agent loaded them).
fn loaded_as(
    i: &bpfman_client::v1_proto::ProgramInfo,
    spec: &ClusterBpfApplicationSpec,
    globals: &BTreeMap<String, Vec<u8>>,
    map_owner: Option<u32>,
) -> bool {
    use bpfman_client::v1_proto::bytecode_location::Location;
    let source = match i.bytecode.as_ref().and_then(|b| b.location.as_ref()) {
        Some(Location::File(f)) => spec.byte_code.path.as_deref() == Some(f.as_str()),
        Some(Location::Image(img)) => {
            spec.byte_code.image.as_ref().map(|x| x.url.as_str()) == Some(img.url.as_str())
        }
        None => false,
    };
    let g: BTreeMap<String, Vec<u8>> = i.global_data.clone().into_iter().collect();
    source && g == *globals && i.map_owner_id == map_owner
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_on_a_character_boundary_saying_so() {
        assert_eq!(bounded("short"), "short");
        let long = "é".repeat(MESSAGE_MAX + 10);
        let b = bounded(&long);
        assert!(b.chars().count() < MESSAGE_MAX + 200);
        assert!(
            b.contains(&format!("{} characters", MESSAGE_MAX + 10)),
            "{}",
            &b[b.len() - 100..]
        );
    }

    #[test]
    fn derived_uuids_are_stable_and_uuid_shaped() {
        let a = derived_uuid(&["s", "p", "x"]);
        assert_eq!(a, derived_uuid(&["s", "p", "x"]));
        assert_ne!(a, derived_uuid(&["s", "px", ""]));
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
    }

    #[test]
    fn spec_checks_name_the_fix() {
        let spec = |v: serde_json::Value| -> ClusterBpfApplicationSpec {
            serde_json::from_value(v).expect("spec")
        };
        let e = check(&spec(serde_json::json!({
            "nodeSelector": {}, "byteCode": {"path": "/x/../etc/o"},
            "programs": [{"name": "a", "type": "TracePoint", "tracepoint": {"links": []}}]
        })))
        .unwrap_err();
        assert!(e.contains("without '.', '..'"), "{e}");
        let e = check(&spec(serde_json::json!({
            "nodeSelector": {}, "byteCode": {"path": "/o"},
            "programs": [{"name": "a", "type": "TracePoint", "tracepoint": {}}, {"name": "a", "type": "TracePoint", "tracepoint": {}}]
        })))
        .unwrap_err();
        assert!(e.contains("listed twice"), "{e}");
        let e = check(&spec(serde_json::json!({
            "nodeSelector": {}, "byteCode": {"image": {"url": "http://x/y"}},
            "programs": [{"name": "a", "type": "TracePoint", "tracepoint": {}}]
        })))
        .unwrap_err();
        assert!(e.contains("not an image reference"), "{e}");
        let e = check(&spec(serde_json::json!({
            "nodeSelector": {}, "byteCode": {"path": "/o"}, "globalData": {"g": [1, 300]},
            "programs": [{"name": "a", "type": "TracePoint", "tracepoint": {}}]
        })))
        .unwrap_err();
        assert!(e.contains("globalData g"), "{e}");
        let g = check(&spec(serde_json::json!({
            "nodeSelector": {}, "byteCode": {"path": "/o"}, "globalData": {"g": [1, 2], "h": "AQ=="},
            "programs": [{"name": "a", "type": "TracePoint", "tracepoint": {}}]
        })))
        .unwrap();
        assert_eq!(g["g"], vec![1, 2]);
        assert_eq!(g["h"], vec![1]);
    }
}
