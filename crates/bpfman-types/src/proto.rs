//! The vocabulary on the `bpfman.v1` wire: the one translation in each direction, used by
//! the client library to build requests and by the daemon's server to read them.

use std::collections::{BTreeMap, HashMap};

use bpfman_api::v1;
use v1::attach_info::Info;

use crate::{AttachSpec, Bytecode, Direction, Invalid, NetHook, ProgramKind, ProgramSpec};

/// Metadata as the wire carries it.
pub type WireMetadata = HashMap<String, String>;

/// The attach info that asks for `spec` with link metadata `metadata`.
pub fn attach_info(spec: &AttachSpec, metadata: WireMetadata) -> v1::AttachInfo {
    let direction = |h: &NetHook| {
        h.direction
            .map(|d| d.as_str().to_string())
            .unwrap_or_default()
    };
    let info = match spec {
        AttachSpec::Xdp(h) => Info::XdpAttachInfo(v1::XdpAttachInfo {
            priority: h.priority,
            iface: h.iface.clone(),
            position: 0,
            proceed_on: h.proceed_on.clone(),
            netns: h.netns.clone(),
            metadata,
        }),
        AttachSpec::Tc(h) => Info::TcAttachInfo(v1::TcAttachInfo {
            priority: h.priority,
            iface: h.iface.clone(),
            position: 0,
            direction: direction(h),
            proceed_on: h.proceed_on.clone(),
            netns: h.netns.clone(),
            metadata,
        }),
        AttachSpec::Tcx(h) => Info::TcxAttachInfo(v1::TcxAttachInfo {
            priority: h.priority,
            iface: h.iface.clone(),
            position: 0,
            direction: direction(h),
            netns: h.netns.clone(),
            metadata,
        }),
        AttachSpec::Tracepoint { tracepoint } => {
            Info::TracepointAttachInfo(v1::TracepointAttachInfo {
                tracepoint: tracepoint.clone(),
                metadata,
            })
        }
        AttachSpec::Kprobe {
            fn_name,
            offset,
            container_pid,
        } => Info::KprobeAttachInfo(v1::KprobeAttachInfo {
            fn_name: fn_name.clone(),
            offset: *offset,
            container_pid: *container_pid,
            metadata,
        }),
        AttachSpec::Uprobe {
            fn_name,
            offset,
            target,
            pid,
            container_pid,
        } => Info::UprobeAttachInfo(v1::UprobeAttachInfo {
            fn_name: fn_name.clone(),
            offset: *offset,
            target: target.clone(),
            pid: *pid,
            container_pid: *container_pid,
            metadata,
        }),
        AttachSpec::Fentry => Info::FentryAttachInfo(v1::FentryAttachInfo { metadata }),
        AttachSpec::Fexit => Info::FexitAttachInfo(v1::FexitAttachInfo { metadata }),
        AttachSpec::Lsm => Info::LsmAttachInfo(v1::LsmAttachInfo { metadata }),
    };
    v1::AttachInfo { info: Some(info) }
}

fn hook(
    iface: String,
    priority: i32,
    proceed_on: Vec<i32>,
    netns: Option<String>,
    direction: Option<&str>,
) -> Result<NetHook, Invalid> {
    let direction = match direction {
        Some(d) => Some(d.parse::<Direction>()?),
        None => None,
    };
    Ok(NetHook {
        iface,
        priority,
        proceed_on,
        netns: netns.filter(|n| !n.is_empty()),
        direction,
    })
}

/// What an attach info asks for, and the link metadata it carries.
pub fn attach_spec(
    info: v1::AttachInfo,
) -> Result<(AttachSpec, BTreeMap<String, String>), Invalid> {
    let info = info
        .info
        .ok_or_else(|| Invalid("attach info names no attach type".into()))?;
    let md = |m: WireMetadata| m.into_iter().collect::<BTreeMap<_, _>>();
    Ok(match info {
        Info::XdpAttachInfo(x) => (
            AttachSpec::Xdp(hook(x.iface, x.priority, x.proceed_on, x.netns, None)?),
            md(x.metadata),
        ),
        Info::TcAttachInfo(x) => (
            AttachSpec::Tc(hook(
                x.iface,
                x.priority,
                x.proceed_on,
                x.netns,
                Some(&x.direction),
            )?),
            md(x.metadata),
        ),
        Info::TcxAttachInfo(x) => (
            AttachSpec::Tcx(hook(
                x.iface,
                x.priority,
                vec![],
                x.netns,
                Some(&x.direction),
            )?),
            md(x.metadata),
        ),
        Info::TracepointAttachInfo(x) => (
            AttachSpec::Tracepoint {
                tracepoint: x.tracepoint,
            },
            md(x.metadata),
        ),
        Info::KprobeAttachInfo(x) => (
            AttachSpec::Kprobe {
                fn_name: x.fn_name,
                offset: x.offset,
                container_pid: x.container_pid,
            },
            md(x.metadata),
        ),
        Info::UprobeAttachInfo(x) => (
            AttachSpec::Uprobe {
                fn_name: x.fn_name.filter(|f| !f.is_empty()),
                offset: x.offset,
                target: x.target,
                pid: x.pid,
                container_pid: x.container_pid,
            },
            md(x.metadata),
        ),
        Info::FentryAttachInfo(x) => (AttachSpec::Fentry, md(x.metadata)),
        Info::FexitAttachInfo(x) => (AttachSpec::Fexit, md(x.metadata)),
        Info::LsmAttachInfo(x) => (AttachSpec::Lsm, md(x.metadata)),
    })
}

/// The load info that asks for `p`.
pub fn load_info(p: &ProgramSpec) -> v1::LoadInfo {
    use v1::prog_specific_info::Info as P;
    let info = p.attach_fn.clone().and_then(|f| match p.kind {
        ProgramKind::Fentry => Some(P::FentryLoadInfo(v1::FentryLoadInfo { fn_name: f })),
        ProgramKind::Fexit => Some(P::FexitLoadInfo(v1::FexitLoadInfo { fn_name: f })),
        ProgramKind::Lsm => Some(P::LsmLoadInfo(v1::LsmLoadInfo { hook_name: f })),
        _ => None,
    });
    v1::LoadInfo {
        name: p.name.clone(),
        program_type: p.kind.v1_type() as i32,
        info: info.map(|i| v1::ProgSpecificInfo { info: Some(i) }),
    }
}

/// What a load info asks for.
pub fn program_spec(info: v1::LoadInfo) -> Result<ProgramSpec, Invalid> {
    use v1::prog_specific_info::Info as P;
    let kind = ProgramKind::from_v1(info.program_type)
        .map_err(|e| Invalid(format!("program '{}': {e}", info.name)))?;
    let attach_fn = info.info.and_then(|i| i.info).map(|i| match i {
        P::FentryLoadInfo(f) => f.fn_name,
        P::FexitLoadInfo(f) => f.fn_name,
        P::LsmLoadInfo(l) => l.hook_name,
    });
    Ok(ProgramSpec {
        name: info.name,
        kind,
        attach_fn,
    })
}

/// The wire form of where bytecode comes from (credentials are never echoed).
pub fn bytecode_location(b: &Bytecode) -> v1::BytecodeLocation {
    v1::BytecodeLocation {
        location: Some(match b {
            Bytecode::File(f) => v1::bytecode_location::Location::File(f.clone()),
            Bytecode::Image {
                url, pull_policy, ..
            } => v1::bytecode_location::Location::Image(v1::BytecodeImage {
                url: url.clone(),
                image_pull_policy: *pull_policy,
                username: None,
                password: None,
            }),
        }),
    }
}

/// Where a request's bytecode comes from, and the registry credentials it carries.
pub fn bytecode(
    loc: Option<v1::BytecodeLocation>,
) -> Result<(Bytecode, Option<(String, String)>), Invalid> {
    match loc.and_then(|b| b.location) {
        Some(v1::bytecode_location::Location::File(f)) => Ok((Bytecode::File(f), None)),
        Some(v1::bytecode_location::Location::Image(i)) => {
            let auth = i
                .username
                .clone()
                .map(|u| (u, i.password.clone().unwrap_or_default()));
            Ok((
                Bytecode::Image {
                    url: i.url,
                    pull_policy: i.image_pull_policy,
                    digest: None,
                },
                auth,
            ))
        }
        None => Err(Invalid("load needs bytecode: a file or an image".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_specs_round_trip() {
        let net = NetHook {
            iface: "veth0".into(),
            priority: 7,
            proceed_on: vec![2, 31],
            netns: Some("/run/netns/x".into()),
            direction: Some(Direction::Egress),
        };
        let specs = [
            AttachSpec::Xdp(NetHook {
                direction: None,
                ..net.clone()
            }),
            AttachSpec::Tc(net.clone()),
            AttachSpec::Tcx(NetHook {
                proceed_on: vec![],
                ..net
            }),
            AttachSpec::Tracepoint {
                tracepoint: "syscalls/sys_enter_openat".into(),
            },
            AttachSpec::Kprobe {
                fn_name: "do_unlinkat".into(),
                offset: 16,
                container_pid: Some(4),
            },
            AttachSpec::Uprobe {
                fn_name: Some("malloc".into()),
                offset: 0,
                target: "libc".into(),
                pid: Some(3),
                container_pid: None,
            },
            AttachSpec::Fentry,
            AttachSpec::Fexit,
            AttachSpec::Lsm,
        ];
        for s in specs {
            let md: WireMetadata = [("k".to_string(), "v".to_string())].into();
            let (back, m) = attach_spec(attach_info(&s, md)).expect("round trip");
            assert_eq!(back, s);
            assert_eq!(m.get("k").map(String::as_str), Some("v"));
        }
    }

    #[test]
    fn load_infos_round_trip() {
        for kind in ProgramKind::ALL {
            let p = ProgramSpec {
                name: "f".into(),
                kind,
                attach_fn: kind.needs_attach_fn().then(|| "x".to_string()),
            };
            let back = program_spec(load_info(&p)).expect("round trip");
            // The wire has one type for both flavours; the section decides at load.
            let expect = match kind {
                ProgramKind::Kretprobe => ProgramKind::Kprobe,
                ProgramKind::Uretprobe => ProgramKind::Uprobe,
                k => k,
            };
            assert_eq!(back.kind, expect);
            assert_eq!(back.attach_fn, p.attach_fn);
        }
    }

    #[test]
    fn bad_wire_values_say_why() {
        let e = attach_spec(v1::AttachInfo { info: None }).unwrap_err();
        assert!(e.0.contains("no attach type"));
        let e = program_spec(v1::LoadInfo {
            name: "p".into(),
            program_type: 42,
            info: None,
        })
        .unwrap_err();
        assert_eq!(e.0, "program 'p': unknown program type 42");
        assert!(bytecode(None).is_err());
    }
}
