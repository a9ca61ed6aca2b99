//! Owns the rule that turns an application's per-node States into its one condition: which
//! nodes the application selects, which of them have converged on its current generation,
//! failed, not reported, or stopped reporting, and the message that names them. Pure: the
//! controller in `apps` feeds it what the watches hold and writes what it returns.
//!
//! Upstream's rule (reference 2.2) with its holes closed: a node counts as converged only when
//! its State's condition was set for the application's current generation (upstream counts a
//! State that still describes the previous spec); only the nodes the application selects are
//! waited for (upstream waits for every node); a node whose kubelet stopped reporting is named
//! instead of being trusted; an application selecting no node says so instead of Success; and
//! deletion is DeleteError only when a node reports that it cannot clean up or cannot be
//! reached, not for every moment of an ordinary deletion.

use std::collections::BTreeMap;

use bpfman_k8s::conditions::{AppCondition, StateCondition};

/// What the rule needs of one Node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    pub name: String,
    /// The Node's Ready condition is True. A node whose kubelet stopped posting status
    /// (Unknown) or that is NotReady cannot be trusted to run or remove programs.
    pub ready: bool,
    /// Whether the application's nodeSelector selects it.
    pub selected: bool,
}

/// What the rule needs of one per-node State.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateView {
    pub name: String,
    /// Its `kubernetes.io/hostname` label.
    pub node: String,
    /// Its first condition: type, message and the generation it was set for.
    pub condition: Option<(String, String, Option<i64>)>,
    /// It still carries the agent's finalizer (its node has not finished with it).
    pub agent_finalizer: bool,
}

/// The application as the rule needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppView {
    pub generation: Option<i64>,
    pub deleting: bool,
}

/// What the controller does with the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rolled {
    pub condition: AppCondition,
    pub message: String,
    /// Deleting, and no node holds it any more: the operator's finalizer may go.
    pub release: bool,
}

/// The longest message written (the API server takes 32768 bytes).
pub const MESSAGE_MAX: usize = 4000;

/// The application's condition from its States and the Nodes.
pub fn rollup(app: &AppView, nodes: &[NodeView], states: &[StateView]) -> Rolled {
    let node_of: BTreeMap<&str, &NodeView> = nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    let mut by_node: BTreeMap<&str, Vec<&StateView>> = BTreeMap::new();
    for s in states {
        by_node.entry(s.node.as_str()).or_default().push(s);
    }
    if app.deleting {
        return deleting(&node_of, states);
    }
    let mut failed = Vec::new();
    let mut pending = Vec::new();
    let mut silent = Vec::new();
    let mut selected = 0usize;
    for n in nodes.iter().filter(|n| n.selected) {
        selected += 1;
        let mine = by_node.get(n.name.as_str()).cloned().unwrap_or_default();
        let Some(s) = mine.first() else {
            if n.ready {
                pending.push(format!("{}: no State yet", n.name));
            } else {
                silent.push(format!(
                    "{}: the node is not Ready and has not reported",
                    n.name
                ));
            }
            continue;
        };
        if !n.ready {
            silent.push(format!(
                "{}: the node is not Ready (its kubelet stopped reporting): State {} may be stale",
                n.name, s.name
            ));
            continue;
        }
        // Every State claiming this node counts, and the worst wins: another State for the
        // same node saying Success never hides one saying Error.
        let mut worst: Option<(u8, String)> = None;
        for s in &mine {
            let v = verdict(app, &n.name, s);
            if worst.as_ref().is_none_or(|(r, _)| v.0 > *r) {
                worst = Some(v);
            }
        }
        let dup = if mine.len() > 1 {
            format!(" ({} States claim this node)", mine.len())
        } else {
            String::new()
        };
        match worst {
            Some((2, m)) => failed.push(format!("{m}{dup}")),
            Some((1, m)) => pending.push(format!("{m}{dup}")),
            _ => {}
        }
    }
    // States on nodes the application no longer selects still reporting failure: their
    // programs may be left behind.
    for s in states {
        let sel = node_of.get(s.node.as_str()).is_some_and(|n| n.selected);
        if !sel
            && let Some((t, m, _)) = &s.condition
            && is_failure(t)
        {
            failed.push(format!("{}: {t}: {m} (State {})", s.node, s.name));
        }
    }
    if !failed.is_empty() || !silent.is_empty() {
        let mut parts = Vec::new();
        if !failed.is_empty() {
            parts.push(format!(
                "BpfApplication Reconciliation failed on {} node(s): {}",
                failed.len(),
                failed.join("; ")
            ));
        }
        if !silent.is_empty() {
            parts.push(format!(
                "{} node(s) stopped reporting: {}",
                silent.len(),
                silent.join("; ")
            ));
        }
        return rolled(AppCondition::Error, parts.join(". "), false);
    }
    if selected == 0 {
        return rolled(
            AppCondition::Pending,
            "No node matches the application's nodeSelector: nothing is loaded anywhere; \
             label a node or change the nodeSelector"
                .to_string(),
            false,
        );
    }
    if !pending.is_empty() {
        return rolled(
            AppCondition::Pending,
            format!(
                "Waiting for {} of {selected} node(s): {}",
                pending.len(),
                pending.join("; ")
            ),
            false,
        );
    }
    rolled(
        AppCondition::Success,
        format!(
            "{} on {selected} node(s)",
            AppCondition::Success.default_message()
        ),
        false,
    )
}

fn deleting(node_of: &BTreeMap<&str, &NodeView>, states: &[StateView]) -> Rolled {
    let holding: Vec<&StateView> = states.iter().filter(|s| s.agent_finalizer).collect();
    if holding.is_empty() {
        return rolled(
            AppCondition::Pending,
            "Deleted on every node".to_string(),
            true,
        );
    }
    let mut stuck = Vec::new();
    let mut waiting = Vec::new();
    for s in &holding {
        let ready = node_of.get(s.node.as_str()).is_some_and(|n| n.ready);
        match &s.condition {
            Some((t, m, _)) if t == StateCondition::UnloadError.type_() => {
                stuck.push(format!("{}: {t}: {m} (State {})", s.node, s.name));
            }
            _ if !node_of.contains_key(s.node.as_str()) => stuck.push(format!(
                "{}: the Node no longer exists, so nothing removes State {}: delete its \
                 finalizer by hand once the node's programs are known to be gone",
                s.node, s.name
            )),
            _ if !ready => stuck.push(format!(
                "{}: the node is not Ready: State {} is removed when its agent is back",
                s.node, s.name
            )),
            _ => waiting.push(format!("{} (State {})", s.node, s.name)),
        }
    }
    if !stuck.is_empty() {
        return rolled(
            AppCondition::DeleteError,
            format!(
                "Program Deletion failed on {} node(s): {}",
                stuck.len(),
                stuck.join("; ")
            ),
            false,
        );
    }
    rolled(
        AppCondition::Pending,
        format!(
            "Being deleted: waiting for {} node(s): {}",
            waiting.len(),
            waiting.join("; ")
        ),
        false,
    )
}

/// One State's verdict for its node: 0 converged, 1 pending, 2 failed, with what to say.
fn verdict(app: &AppView, node: &str, s: &StateView) -> (u8, String) {
    match &s.condition {
        None => (1, format!("{node}: State {} has no condition yet", s.name)),
        Some((t, m, g)) => {
            let current = app.generation.is_none() || *g == app.generation;
            if is_failure(t) {
                (2, format!("{node}: {t}: {m} (State {})", s.name))
            } else if t == StateCondition::Success.type_() && current {
                (0, String::new())
            } else if t == StateCondition::Success.type_() {
                (
                    1,
                    format!(
                        "{node}: State {} describes generation {} (current {})",
                        s.name,
                        show(*g),
                        show(app.generation)
                    ),
                )
            } else {
                (1, format!("{node}: {t}: {m}"))
            }
        }
    }
}

fn is_failure(t: &str) -> bool {
    [
        StateCondition::Error,
        StateCondition::UnloadError,
        StateCondition::ProgramListChangedError,
    ]
    .iter()
    .any(|c| c.type_() == t)
}

fn show(g: Option<i64>) -> String {
    g.map_or_else(|| "none".to_string(), |g| g.to_string())
}

fn rolled(condition: AppCondition, message: String, release: bool) -> Rolled {
    Rolled {
        condition,
        message: bound(message),
        release,
    }
}

/// `m` cut at [`MESSAGE_MAX`] bytes on a character boundary, saying how much was cut.
pub fn bound(m: String) -> String {
    cut(m, MESSAGE_MAX)
}

/// `m` cut to at most `max` bytes (max > 40) on a character boundary, saying how much was cut.
pub fn cut(m: String, max: usize) -> String {
    if m.len() <= max {
        return m;
    }
    let mut end = max - 40;
    while !m.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} ... ({} more bytes)", &m[..end], m.len() - end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ready: bool, selected: bool) -> NodeView {
        NodeView {
            name: name.into(),
            ready,
            selected,
        }
    }
    fn state(node: &str, t: Option<&str>, g: i64, fin: bool) -> StateView {
        StateView {
            name: format!("app-{node}-x"),
            node: node.into(),
            condition: t.map(|t| (t.to_string(), format!("{t} message"), Some(g))),
            agent_finalizer: fin,
        }
    }
    const LIVE: AppView = AppView {
        generation: Some(2),
        deleting: false,
    };
    const GONE: AppView = AppView {
        generation: Some(2),
        deleting: true,
    };

    #[test]
    fn success_needs_every_selected_node_on_the_current_generation() {
        let nodes = [
            node("a", true, true),
            node("b", true, true),
            node("c", true, false),
        ];
        let ok = [
            state("a", Some("Success"), 2, true),
            state("b", Some("Success"), 2, true),
        ];
        let r = rollup(&LIVE, &nodes, &ok);
        assert_eq!(r.condition, AppCondition::Success, "{r:?}");
        assert!(r.message.contains("2 node(s)"), "{}", r.message);
        // One node still on the previous generation.
        let old = [
            state("a", Some("Success"), 2, true),
            state("b", Some("Success"), 1, true),
        ];
        let r = rollup(&LIVE, &nodes, &old);
        assert_eq!(r.condition, AppCondition::Pending);
        assert!(
            r.message
                .contains("b: State app-b-x describes generation 1 (current 2)"),
            "{}",
            r.message
        );
    }

    #[test]
    fn a_selected_node_without_a_state_is_pending_and_named() {
        let nodes = [node("a", true, true), node("b", true, true)];
        let r = rollup(&LIVE, &nodes, &[state("a", Some("Success"), 2, true)]);
        assert_eq!(r.condition, AppCondition::Pending);
        assert!(r.message.contains("1 of 2"), "{}", r.message);
        assert!(r.message.contains("b: no State yet"), "{}", r.message);
        let r = rollup(&LIVE, &nodes, &[state("a", None, 2, true)]);
        assert!(r.message.contains("has no condition yet"), "{}", r.message);
    }

    #[test]
    fn a_failure_names_the_node_and_its_cause_and_wins_over_pending() {
        let nodes = [node("a", true, true), node("b", true, true)];
        let r = rollup(
            &LIVE,
            &nodes,
            &[
                state("a", Some("Error"), 2, true),
                state("b", Some("Pending"), 2, true),
            ],
        );
        assert_eq!(r.condition, AppCondition::Error);
        assert!(
            r.message
                .contains("a: Error: Error message (State app-a-x)"),
            "{}",
            r.message
        );
        for t in ["UnloadError", "ProgramListChangedError"] {
            let r = rollup(&LIVE, &nodes[..1], &[state("a", Some(t), 2, true)]);
            assert_eq!(r.condition, AppCondition::Error, "{t}");
        }
        // A node no longer selected whose State reports failure is still named.
        let nodes = [node("a", true, true), node("b", true, false)];
        let r = rollup(
            &LIVE,
            &nodes,
            &[
                state("a", Some("Success"), 2, true),
                state("b", Some("UnloadError"), 2, true),
            ],
        );
        assert_eq!(r.condition, AppCondition::Error);
        assert!(r.message.contains("b: UnloadError"), "{}", r.message);
    }

    #[test]
    fn a_node_that_stopped_reporting_is_called_out() {
        let nodes = [node("a", true, true), node("b", false, true)];
        let r = rollup(
            &LIVE,
            &nodes,
            &[
                state("a", Some("Success"), 2, true),
                state("b", Some("Success"), 2, true),
            ],
        );
        assert_eq!(r.condition, AppCondition::Error);
        assert!(
            r.message.contains("1 node(s) stopped reporting"),
            "{}",
            r.message
        );
        assert!(
            r.message.contains("b: the node is not Ready"),
            "{}",
            r.message
        );
        let r = rollup(&LIVE, &nodes, &[state("a", Some("Success"), 2, true)]);
        assert!(r.message.contains("has not reported"), "{}", r.message);
    }

    #[test]
    fn the_worst_of_a_nodes_states_wins() {
        let nodes = [node("a", true, true)];
        let mut states: Vec<StateView> = (0..15)
            .map(|i| {
                let mut s = state("a", Some("Success"), 2, true);
                s.name = format!("decoy-{i}");
                s
            })
            .collect();
        states.insert(7, state("a", Some("Error"), 2, true));
        let r = rollup(&LIVE, &nodes, &states);
        assert_eq!(r.condition, AppCondition::Error, "{r:?}");
        assert!(
            r.message.contains("16 States claim this node"),
            "{}",
            r.message
        );
    }

    #[test]
    fn no_selected_node_is_never_success() {
        let r = rollup(&LIVE, &[node("a", true, false)], &[]);
        assert_eq!(r.condition, AppCondition::Pending);
        assert!(r.message.contains("No node matches"), "{}", r.message);
        let r = rollup(&LIVE, &[], &[]);
        assert_eq!(r.condition, AppCondition::Pending);
    }

    #[test]
    fn not_selected_states_do_not_hold_success() {
        let nodes = [node("a", true, true), node("b", true, false)];
        let r = rollup(
            &LIVE,
            &nodes,
            &[
                state("a", Some("Success"), 2, true),
                state("b", Some("NotSelected"), 2, true),
            ],
        );
        assert_eq!(r.condition, AppCondition::Success, "{r:?}");
    }

    #[test]
    fn deletion_waits_for_every_node_and_is_an_error_only_when_stuck() {
        let nodes = [node("a", true, true), node("b", true, true)];
        let r = rollup(&GONE, &nodes, &[state("a", Some("Success"), 2, false)]);
        assert!(r.release, "{r:?}");
        let r = rollup(
            &GONE,
            &nodes,
            &[
                state("a", Some("Success"), 2, true),
                state("b", Some("Unloaded"), 2, false),
            ],
        );
        assert!(!r.release);
        assert_eq!(r.condition, AppCondition::Pending);
        assert!(
            r.message.contains("waiting for 1 node(s): a"),
            "{}",
            r.message
        );
        let r = rollup(&GONE, &nodes, &[state("a", Some("UnloadError"), 2, true)]);
        assert_eq!(r.condition, AppCondition::DeleteError);
        assert!(r.message.contains("a: UnloadError"), "{}", r.message);
        // The node is gone or not Ready: nothing will remove it.
        let r = rollup(&GONE, &nodes, &[state("z", Some("Success"), 2, true)]);
        assert_eq!(r.condition, AppCondition::DeleteError);
        assert!(r.message.contains("no longer exists"), "{}", r.message);
        let r = rollup(
            &GONE,
            &[node("a", false, true)],
            &[state("a", Some("Success"), 2, true)],
        );
        assert_eq!(r.condition, AppCondition::DeleteError);
        assert!(r.message.contains("not Ready"), "{}", r.message);
    }

    #[test]
    fn long_messages_are_cut_and_say_so() {
        let nodes: Vec<NodeView> = (0..500)
            .map(|i| node(&format!("n{i}"), true, true))
            .collect();
        let r = rollup(&LIVE, &nodes, &[]);
        assert!(r.message.len() <= MESSAGE_MAX + 30, "{}", r.message.len());
        assert!(r.message.ends_with("more bytes)"), "{}", r.message);
        let cut = bound("é".repeat(MESSAGE_MAX));
        assert!(cut.len() < MESSAGE_MAX * 2);
    }
}
