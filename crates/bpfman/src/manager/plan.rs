//! Pure planners: the decisions the manager makes before it touches the kernel, as
//! functions of what the store and the kernel's features say. No locks, no I/O; each is
//! unit-tested here without root or a kernel.
//!
//! - [`dispatch_kind`]: does a hook share its programs through a dispatcher here, and
//!   which one;
//! - [`tcx_order`]: where a program joins a TCX hook (its position, and the program or
//!   link the kernel is told to put it before or after);
//! - [`slots`]: a dispatcher revision's slots in run order with their proceed-on masks;
//! - [`next_revision`]: the number of the next dispatcher revision;
//! - [`positions`]: every link's position on an ordered hook.

use crate::dispatcher::{Slot, SlotConfig, order, tc_mask, xdp_mask};
use crate::error::{Error, Result};
use crate::kernel::TcxAnchor;
use crate::model::{AttachSpec, HookKind, Link};

/// The priority a link without one sorts at (upstream's default, last).
const DEFAULT_PRIORITY: i32 = 1000;

fn priority(l: &Link) -> i32 {
    l.spec
        .net_hook()
        .map(|h| h.priority)
        .unwrap_or(DEFAULT_PRIORITY)
}

/// Whether links like `spec` share their hook through a dispatcher on a kernel with
/// these features, and which: XDP where freplace works; TC where freplace works (behind
/// a TCX link where the kernel has TCX, else a classic clsact filter) and, with a lone
/// program as the filter, where the kernel has neither. Elsewhere tc programs share the
/// hook through TCX itself, like tcx programs.
pub(super) fn dispatch_kind(spec: &AttachSpec, freplace: bool, tcx: bool) -> Option<HookKind> {
    match spec {
        AttachSpec::Xdp(_) if freplace => Some(HookKind::Xdp),
        AttachSpec::Tc(_) if freplace || !tcx => Some(HookKind::Tc),
        _ => None,
    }
}

/// Where a program joins a TCX hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TcxOrder {
    /// 0-based position among the hook's directly attached programs.
    pub position: i32,
    /// What the kernel is told; `None`: the hook is empty, append.
    pub anchor: Option<TcxAnchor>,
}

/// Lower priority runs first; equal priorities in attach order. `direct` are the links
/// attached to the hook directly (not through a dispatcher); `dispatcher_link` the bpf_link
/// id of a TC dispatcher behind TCX, which stays after every tcx program (classic TC runs
/// after TCX).
pub(super) fn tcx_order(
    direct: &[&Link],
    priority_of_new: i32,
    dispatcher_link: Option<u32>,
) -> TcxOrder {
    let mut ordered: Vec<&Link> = direct.to_vec();
    ordered.sort_by_key(|l| (priority(l), l.id));
    let before = ordered.iter().position(|l| priority(l) > priority_of_new);
    let anchor = match (before, ordered.last(), dispatcher_link) {
        (Some(i), _, _) => Some(TcxAnchor::Before(ordered[i].program_id)),
        (None, Some(l), _) => Some(TcxAnchor::After(l.program_id)),
        (None, None, Some(d)) => Some(TcxAnchor::BeforeLink(d)),
        (None, None, None) => None,
    };
    TcxOrder {
        position: before.unwrap_or(ordered.len()) as i32,
        anchor,
    }
}

/// A dispatcher revision's slots in run order, and each slot's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Slots {
    pub order: Vec<Slot>,
    pub config: Vec<SlotConfig>,
}

impl Slots {
    pub fn iter(&self) -> std::slice::Iter<'_, Slot> {
        self.order.iter()
    }
    pub fn len(&self) -> usize {
        self.order.len()
    }
    pub fn as_slice(&self) -> &[Slot] {
        &self.order
    }
}

/// The slots of a revision running `links` on a hook of `kind`: run order by (priority,
/// link id), and each slot's chain mask from its proceed-on codes.
pub(super) fn slots(links: &[Link], kind: HookKind) -> Result<Slots> {
    let order = order(
        links
            .iter()
            .map(|l| Slot {
                link_id: l.id,
                priority: priority(l),
            })
            .collect(),
    );
    let mut config = Vec::with_capacity(order.len());
    for s in &order {
        let l = links
            .iter()
            .find(|l| l.id == s.link_id)
            .ok_or_else(|| Error::internal("slot without link"))?;
        let proceed = l
            .spec
            .net_hook()
            .map(|h| h.proceed_on.as_slice())
            .unwrap_or_default();
        config.push(SlotConfig {
            chain_call_actions: match kind {
                HookKind::Xdp => xdp_mask(proceed)?,
                HookKind::Tc => tc_mask(proceed)?,
            },
            run_prio: s.priority.max(0) as u32,
            flags: 0,
        });
    }
    Ok(Slots { order, config })
}

/// The next revision: above the recorded one and above any a crash left on bpffs
/// (`on_disk` are the names in the hook's directory; non-numbers are ignored).
pub(super) fn next_revision(recorded: Option<u32>, on_disk: &[String]) -> u32 {
    let disk = on_disk
        .iter()
        .filter_map(|n| n.parse::<u32>().ok())
        .max()
        .unwrap_or(0);
    recorded.unwrap_or(0).max(disk) + 1
}

/// Positions on an ordered hook follow (priority, link id); on a TC hook with a
/// dispatcher behind TCX, the directly attached (tcx) programs come first and then the
/// dispatcher's. Returns (link id, position) for every link whose position changes.
pub(super) fn positions(links: &[Link], dispatched: impl Fn(&Link) -> bool) -> Vec<(u32, i32)> {
    let mut sorted: Vec<&Link> = links.iter().collect();
    sorted.sort_by_key(|l| (dispatched(l), priority(l), l.id));
    sorted
        .iter()
        .enumerate()
        .filter(|(i, l)| l.position != *i as i32)
        .map(|(i, l)| (l.id, i as i32))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Caller, Direction, NetHook};

    fn net(priority: i32, proceed_on: Vec<i32>) -> NetHook {
        NetHook {
            iface: "veth0".into(),
            priority,
            proceed_on,
            netns: None,
            direction: Some(Direction::Ingress),
        }
    }

    fn link(id: u32, program_id: u32, spec: AttachSpec) -> Link {
        Link {
            id,
            program_id,
            spec,
            ifindex: Some(3),
            kernel_link_id: 0,
            pin_path: String::new(),
            metadata: Default::default(),
            owner: Caller {
                uid: 0,
                gid: 0,
                pid: 1,
            },
            created_at: String::new(),
            position: 0,
            hook: None,
        }
    }

    #[test]
    fn dispatcher_decisions_follow_features() {
        let xdp = AttachSpec::Xdp(net(50, vec![]));
        let tc = AttachSpec::Tc(net(50, vec![]));
        let tcx = AttachSpec::Tcx(net(50, vec![]));
        // freplace: both dispatched.
        assert_eq!(dispatch_kind(&xdp, true, true), Some(HookKind::Xdp));
        assert_eq!(dispatch_kind(&tc, true, true), Some(HookKind::Tc));
        // No freplace, TCX: XDP direct (one program), TC shares through TCX itself.
        assert_eq!(dispatch_kind(&xdp, false, true), None);
        assert_eq!(dispatch_kind(&tc, false, true), None);
        // Neither: TC keeps the (lone-program) classic filter path.
        assert_eq!(dispatch_kind(&tc, false, false), Some(HookKind::Tc));
        // tcx programs are never dispatched.
        assert_eq!(dispatch_kind(&tcx, true, true), None);
        assert_eq!(dispatch_kind(&AttachSpec::Fentry, true, true), None);
    }

    #[test]
    fn tcx_order_by_priority_then_attach_order() {
        let a = link(1, 101, AttachSpec::Tcx(net(10, vec![])));
        let b = link(2, 102, AttachSpec::Tcx(net(50, vec![])));
        let c = link(3, 103, AttachSpec::Tcx(net(50, vec![])));
        let hook = [&c, &a, &b];
        // Lowest priority: before the first.
        assert_eq!(
            tcx_order(&hook, 5, None),
            TcxOrder {
                position: 0,
                anchor: Some(TcxAnchor::Before(101))
            }
        );
        // Equal priority joins after the existing ones (attach order).
        assert_eq!(
            tcx_order(&hook, 50, None),
            TcxOrder {
                position: 3,
                anchor: Some(TcxAnchor::After(103))
            }
        );
        // Between.
        assert_eq!(
            tcx_order(&hook, 20, None),
            TcxOrder {
                position: 1,
                anchor: Some(TcxAnchor::Before(102))
            }
        );
        // Empty hook with a dispatcher link behind TCX: before it.
        assert_eq!(
            tcx_order(&[], 20, Some(77)),
            TcxOrder {
                position: 0,
                anchor: Some(TcxAnchor::BeforeLink(77))
            }
        );
        // Empty hook: append.
        assert_eq!(
            tcx_order(&[], 20, None),
            TcxOrder {
                position: 0,
                anchor: None
            }
        );
        // With programs and a dispatcher link, the programs decide (the dispatcher stays last).
        assert_eq!(
            tcx_order(&[&a], 90, Some(77)).anchor,
            Some(TcxAnchor::After(101))
        );
    }

    #[test]
    fn slots_in_run_order_with_proceed_on_masks() {
        let links = vec![
            link(4, 1, AttachSpec::Xdp(net(60, vec![2]))),
            link(2, 2, AttachSpec::Xdp(net(60, vec![]))),
            link(9, 3, AttachSpec::Xdp(net(10, vec![1, 2]))),
        ];
        let s = slots(&links, HookKind::Xdp).expect("slots");
        let order: Vec<u32> = s.iter().map(|s| s.link_id).collect();
        assert_eq!(order, vec![9, 2, 4]);
        // Bit per code plus the dispatcher's own return (31).
        assert_eq!(
            s.config[0].chain_call_actions,
            (1 << 1) | (1 << 2) | (1 << 31)
        );
        assert_eq!(s.config[1].chain_call_actions, 1 << 31);
        assert_eq!(s.config[2].run_prio, 60);
        // TC codes are shifted by one (TC_ACT_UNSPEC is -1).
        let tc = vec![link(1, 1, AttachSpec::Tc(net(5, vec![-1, 0])))];
        let s = slots(&tc, HookKind::Tc).expect("slots");
        assert_eq!(s.config[0].chain_call_actions & 0b11, 0b11);
        // A code outside the hook's range is refused, naming it.
        let bad = vec![link(1, 1, AttachSpec::Xdp(net(5, vec![40])))];
        let e = slots(&bad, HookKind::Xdp).expect_err("out of range");
        assert!(e.message().contains("40"), "{e}");
    }

    #[test]
    fn revisions_only_grow() {
        assert_eq!(next_revision(None, &[]), 1);
        assert_eq!(next_revision(Some(4), &["3".into(), "link".into()]), 5);
        // A crash left a newer revision on bpffs than the record: go above it.
        assert_eq!(next_revision(Some(4), &["4".into(), "7".into()]), 8);
    }

    #[test]
    fn positions_put_dispatched_links_last() {
        let mut a = link(1, 1, AttachSpec::Tcx(net(50, vec![])));
        let b = link(2, 2, AttachSpec::Tc(net(1, vec![])));
        let c = link(3, 3, AttachSpec::Tcx(net(10, vec![])));
        a.position = 1;
        let links = vec![a, b, c];
        let moved = positions(&links, |l| matches!(l.spec, AttachSpec::Tc(_)));
        // c (prio 10) first, a (50) second (already 1), b (dispatched) last.
        assert_eq!(moved, vec![(2, 2)]);
    }
}
