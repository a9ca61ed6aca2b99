//! Dispatchers: many programs on one XDP or TC hook (libxdp's multi-prog protocol,
//! dispatcher version 2, extended to TC). This module is the pure part: the order of
//! programs on a hook, the proceed-on masks, and the dispatcher config the daemon
//! writes into the dispatcher's `.rodata` before loading it. The kernel module loads
//! dispatchers and attaches programs into their slots; the manager decides when.

use crate::error::{Error, Result};

/// Slots per dispatcher.
pub const MAX_PROGRAMS: usize = 10;
pub const XDP_DISPATCHER_MAGIC: u8 = 236;
pub const XDP_DISPATCHER_VERSION: u8 = 2;
/// What an unreplaced XDP slot returns; its bit is always in the chain mask.
pub const XDP_DISPATCHER_RETVAL: i32 = 31;
pub const TC_DISPATCHER_MAGIC: u8 = 84;
pub const TC_DISPATCHER_VERSION: u8 = 1;
pub const TC_DISPATCHER_RETVAL: i32 = 30;

/// One program's place on a hook, as the ordering sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub link_id: u32,
    pub priority: i32,
}

/// The run order: lower priority first; equal priorities in attach order (lower link
/// id first; link ids only grow, so this is stable across rebuilds and restarts).
pub fn order(mut slots: Vec<Slot>) -> Vec<Slot> {
    slots.sort_by_key(|s| (s.priority, s.link_id));
    slots
}

/// XDP chain mask: bit `1 << code` per proceed-on code, plus the slot sentinel.
pub fn xdp_mask(proceed_on: &[i32]) -> Result<u32> {
    let mut m = 1u32 << XDP_DISPATCHER_RETVAL;
    for &c in proceed_on {
        if !(0..=31).contains(&c) {
            return Err(Error::invalid(format!(
                "XDP proceed-on code {c} is out of range"
            )));
        }
        m |= 1 << c;
    }
    Ok(m)
}

/// TC chain mask: bit `1 << (code + 1)` (TC_ACT_UNSPEC is -1), plus the slot sentinel.
pub fn tc_mask(proceed_on: &[i32]) -> Result<u32> {
    let mut m = 1u32 << (TC_DISPATCHER_RETVAL + 1);
    for &c in proceed_on {
        if !(-1..=30).contains(&c) {
            return Err(Error::invalid(format!(
                "TC proceed-on code {c} is out of range"
            )));
        }
        m |= 1 << (c + 1);
    }
    Ok(m)
}

/// A program in a dispatcher: its chain mask and priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotConfig {
    pub chain_call_actions: u32,
    pub run_prio: u32,
    /// XDP program flags (BPF_F_XDP_HAS_FRAGS when the program supports frags).
    pub flags: u32,
}

fn too_many(n: usize) -> Error {
    Error::precondition(format!(
        "a dispatcher runs at most {MAX_PROGRAMS} programs on one hook; this would make {n}: \
         detach one first"
    ))
}

/// The XDP dispatcher's `.rodata` config (`struct xdp_dispatcher_config`, native endian).
pub fn xdp_config(slots: &[SlotConfig], frags: bool) -> Result<Vec<u8>> {
    if slots.len() > MAX_PROGRAMS {
        return Err(too_many(slots.len()));
    }
    let mut b = vec![
        XDP_DISPATCHER_MAGIC,
        XDP_DISPATCHER_VERSION,
        slots.len() as u8,
        frags as u8,
    ];
    for f in [
        |s: &SlotConfig| s.chain_call_actions,
        |s: &SlotConfig| s.run_prio,
        |s: &SlotConfig| s.flags,
    ] {
        for i in 0..MAX_PROGRAMS {
            b.extend_from_slice(&slots.get(i).map(f).unwrap_or(0).to_ne_bytes());
        }
    }
    Ok(b)
}

/// The TC dispatcher's `.rodata` config (`struct tc_dispatcher_config`, native endian).
pub fn tc_config(slots: &[SlotConfig]) -> Result<Vec<u8>> {
    if slots.len() > MAX_PROGRAMS {
        return Err(too_many(slots.len()));
    }
    let mut b = vec![
        TC_DISPATCHER_MAGIC,
        TC_DISPATCHER_VERSION,
        slots.len() as u8,
        0,
    ];
    for f in [
        |s: &SlotConfig| s.chain_call_actions,
        |s: &SlotConfig| s.run_prio,
    ] {
        for i in 0..MAX_PROGRAMS {
            b.extend_from_slice(&slots.get(i).map(f).unwrap_or(0).to_ne_bytes());
        }
    }
    Ok(b)
}

/// The slot function a position runs in.
pub fn slot_function(position: usize) -> String {
    format!("prog{position}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_priority_then_attach_order() {
        let s = |link_id, priority| Slot { link_id, priority };
        let got = order(vec![s(5, 50), s(2, 50), s(9, 10), s(1, 1000)]);
        assert_eq!(got, vec![s(9, 10), s(2, 50), s(5, 50), s(1, 1000)]);
    }

    #[test]
    fn masks() {
        // pass (2) and dispatcher_return (31)
        assert_eq!(xdp_mask(&[2, 31]).ok(), Some((1 << 2) | (1 << 31)));
        // an empty list still lets unreplaced slots fall through
        assert_eq!(xdp_mask(&[]).ok(), Some(1 << 31));
        assert!(xdp_mask(&[32]).is_err());
        // unspec (-1) -> bit 0, ok (0) -> bit 1, pipe (3) -> bit 4, dispatcher_return (30) -> bit 31
        assert_eq!(tc_mask(&[-1, 0, 3, 30]).ok(), Some(1 | 2 | 16 | (1 << 31)));
        assert!(tc_mask(&[31]).is_err());
    }

    #[test]
    fn xdp_config_layout_matches_libxdp_v2() {
        let slots = [
            SlotConfig {
                chain_call_actions: 0x8000_0004,
                run_prio: 10,
                flags: 0,
            },
            SlotConfig {
                chain_call_actions: 0x8000_0006,
                run_prio: 20,
                flags: 1,
            },
        ];
        let b = xdp_config(&slots, false).unwrap_or_default();
        assert_eq!(b.len(), 4 + 3 * 4 * MAX_PROGRAMS);
        assert_eq!(&b[..4], &[236, 2, 2, 0]);
        let word =
            |i: usize| u32::from_ne_bytes([b[4 + 4 * i], b[5 + 4 * i], b[6 + 4 * i], b[7 + 4 * i]]);
        assert_eq!(word(0), 0x8000_0004);
        assert_eq!(word(1), 0x8000_0006);
        assert_eq!(word(2), 0);
        assert_eq!(word(MAX_PROGRAMS), 10);
        assert_eq!(word(MAX_PROGRAMS + 1), 20);
        assert_eq!(word(2 * MAX_PROGRAMS + 1), 1);
        assert!(xdp_config(&[slots[0]; 11], false).is_err());
    }

    #[test]
    fn tc_config_layout() {
        let b = tc_config(&[]).unwrap_or_default();
        assert_eq!(b.len(), 4 + 2 * 4 * MAX_PROGRAMS);
        assert_eq!(&b[..4], &[84, 1, 0, 0]);
    }
}
