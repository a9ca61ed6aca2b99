//! Owns the State's program entries in upstream's layout: reading the links an earlier pass
//! (ours or upstream's agent) recorded back into [`Detail`]s, and writing a program's links
//! into the member its type uses (`xdp`, `tc`, ... each with `links`).

use bpfman_k8s::v1alpha1::{
    ClusterProgramState, Direction, FentryProgramState, KprobeLinkState, KretprobeLinkState,
    LinkStateCommon, LinksState, ProgramLinkStatus, ProgramType, TcLinkState, TcProceedOn,
    TcxLinkState, TracepointLinkState, UprobeLinkState, XdpLinkState, XdpProceedOn,
};

use crate::expand::Detail;

fn xdp_po(names: &[String]) -> Vec<XdpProceedOn> {
    names
        .iter()
        .map(|n| serde_json::from_value(serde_json::Value::String(n.clone())))
        .filter_map(Result::ok)
        .collect()
}

fn tc_po(names: &[String]) -> Vec<TcProceedOn> {
    names
        .iter()
        .map(|n| serde_json::from_value(serde_json::Value::String(n.clone())))
        .filter_map(Result::ok)
        .collect()
}

fn dir(s: &str) -> Direction {
    serde_json::from_value(serde_json::Value::String(s.to_string())).unwrap_or(Direction::Ingress)
}

/// The links recorded for a program, each with its common fields.
pub fn recorded(p: &ClusterProgramState) -> Vec<(Detail, LinkStateCommon)> {
    let mut out = Vec::new();
    for l in p.xdp.iter().flat_map(|m| &m.links) {
        out.push((
            Detail::Xdp {
                iface: l.interface_name.clone(),
                netns: l.netns_path.clone(),
                priority: l.priority,
                proceed_on: l
                    .proceed_on
                    .iter()
                    .map(|p| p.as_str().to_string())
                    .collect(),
            },
            l.common.clone(),
        ));
    }
    for l in p.tc.iter().flat_map(|m| &m.links) {
        out.push((
            Detail::Tc {
                iface: l.interface_name.clone(),
                netns: l.netns_path.clone(),
                direction: l.direction.as_str().to_string(),
                priority: l.priority,
                proceed_on: l
                    .proceed_on
                    .iter()
                    .map(|p| p.as_str().to_string())
                    .collect(),
            },
            l.common.clone(),
        ));
    }
    for l in p.tcx.iter().flat_map(|m| &m.links) {
        out.push((
            Detail::Tcx {
                iface: l.interface_name.clone(),
                netns: l.netns_path.clone(),
                direction: l.direction.as_str().to_string(),
                priority: l.priority,
            },
            l.common.clone(),
        ));
    }
    for l in p.fentry.iter().chain(p.fexit.iter()).flat_map(|m| &m.links) {
        out.push((Detail::Trampoline, l.clone()));
    }
    for l in p.kprobe.iter().flat_map(|m| &m.links) {
        out.push((
            Detail::Kprobe {
                function: l.function.clone(),
                offset: l.offset,
            },
            l.common.clone(),
        ));
    }
    for l in p.kretprobe.iter().flat_map(|m| &m.links) {
        out.push((
            Detail::Kretprobe {
                function: l.function.clone(),
            },
            l.common.clone(),
        ));
    }
    for l in p.tracepoint.iter().flat_map(|m| &m.links) {
        out.push((
            Detail::Tracepoint {
                name: l.name.clone(),
            },
            l.common.clone(),
        ));
    }
    for l in p
        .uprobe
        .iter()
        .chain(p.uretprobe.iter())
        .flat_map(|m| &m.links)
    {
        out.push((
            Detail::Uprobe {
                target: l.target.clone(),
                function: l.function.clone(),
                offset: l.offset,
                pid: l.pid,
                container_pid: l.container_pid,
            },
            l.common.clone(),
        ));
    }
    out
}

/// A program entry with `links` written into its type's member.
pub fn program_entry(
    name: &str,
    type_: &ProgramType,
    fentry_fn: Option<&str>,
    program_id: Option<u32>,
    link_status: ProgramLinkStatus,
    links: Vec<(Detail, LinkStateCommon)>,
) -> ClusterProgramState {
    let mut p = ClusterProgramState {
        name: name.to_string(),
        type_: type_.clone(),
        program_id,
        program_link_status: link_status,
        xdp: None,
        tc: None,
        tcx: None,
        fentry: None,
        fexit: None,
        kprobe: None,
        kretprobe: None,
        uprobe: None,
        uretprobe: None,
        tracepoint: None,
    };
    // Every type's member is present (possibly without links), as the union rules demand.
    match type_ {
        ProgramType::Xdp => p.xdp = Some(LinksState { links: Vec::new() }),
        ProgramType::Tc => p.tc = Some(LinksState { links: Vec::new() }),
        ProgramType::Tcx => p.tcx = Some(LinksState { links: Vec::new() }),
        ProgramType::FEntry | ProgramType::FExit => {
            let f = Some(FentryProgramState {
                function: fentry_fn.unwrap_or_default().to_string(),
                links: Vec::new(),
            });
            if *type_ == ProgramType::FEntry {
                p.fentry = f
            } else {
                p.fexit = f
            }
        }
        ProgramType::KProbe => p.kprobe = Some(LinksState { links: Vec::new() }),
        ProgramType::KRetProbe => p.kretprobe = Some(LinksState { links: Vec::new() }),
        ProgramType::UProbe => p.uprobe = Some(LinksState { links: Vec::new() }),
        ProgramType::URetProbe => p.uretprobe = Some(LinksState { links: Vec::new() }),
        ProgramType::TracePoint => p.tracepoint = Some(LinksState { links: Vec::new() }),
        ProgramType::Other(_) => {}
    }
    for (d, common) in links {
        match d {
            Detail::Xdp {
                iface,
                netns,
                priority,
                proceed_on,
            } => {
                if let Some(m) = p.xdp.as_mut() {
                    m.links.push(XdpLinkState {
                        common,
                        interface_name: iface,
                        netns_path: netns,
                        priority,
                        proceed_on: xdp_po(&proceed_on),
                    })
                }
            }
            Detail::Tc {
                iface,
                netns,
                direction,
                priority,
                proceed_on,
            } => {
                if let Some(m) = p.tc.as_mut() {
                    m.links.push(TcLinkState {
                        common,
                        interface_name: iface,
                        netns_path: netns,
                        direction: dir(&direction),
                        priority,
                        proceed_on: tc_po(&proceed_on),
                    })
                }
            }
            Detail::Tcx {
                iface,
                netns,
                direction,
                priority,
            } => {
                if let Some(m) = p.tcx.as_mut() {
                    m.links.push(TcxLinkState {
                        common,
                        interface_name: iface,
                        netns_path: netns,
                        direction: dir(&direction),
                        priority,
                    })
                }
            }
            Detail::Trampoline => {
                if let Some(m) = p.fentry.as_mut().or(p.fexit.as_mut()) {
                    m.links.push(common)
                }
            }
            Detail::Kprobe { function, offset } => {
                if let Some(m) = p.kprobe.as_mut() {
                    m.links.push(KprobeLinkState {
                        common,
                        function,
                        offset,
                    })
                }
            }
            Detail::Kretprobe { function } => {
                if let Some(m) = p.kretprobe.as_mut() {
                    m.links.push(KretprobeLinkState { common, function })
                }
            }
            Detail::Tracepoint { name } => {
                if let Some(m) = p.tracepoint.as_mut() {
                    m.links.push(TracepointLinkState { common, name })
                }
            }
            Detail::Uprobe {
                target,
                function,
                offset,
                pid,
                container_pid,
            } => {
                if let Some(m) = p.uprobe.as_mut().or(p.uretprobe.as_mut()) {
                    m.links.push(UprobeLinkState {
                        common,
                        target,
                        function,
                        offset,
                        pid,
                        container_pid,
                    })
                }
            }
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use bpfman_k8s::v1alpha1::LinkStatus;

    #[test]
    fn entries_round_trip_through_the_layout() {
        let common = LinkStateCommon {
            should_attach: true,
            uuid: "u".into(),
            link_id: Some(7),
            link_status: LinkStatus::Attached,
        };
        let links = vec![
            (
                Detail::Tc {
                    iface: "eth0".into(),
                    netns: Some("/host/proc/9/ns/net".into()),
                    direction: "Egress".into(),
                    priority: 5,
                    proceed_on: vec!["UnSpec".into(), "Pipe".into()],
                },
                common.clone(),
            ),
            (
                Detail::Tc {
                    iface: "eth1".into(),
                    netns: None,
                    direction: "Ingress".into(),
                    priority: 1000,
                    proceed_on: vec![],
                },
                common.clone(),
            ),
        ];
        let p = program_entry(
            "p",
            &ProgramType::Tc,
            None,
            Some(3),
            ProgramLinkStatus::Success,
            links.clone(),
        );
        assert_eq!(recorded(&p), links);
        let f = program_entry(
            "f",
            &ProgramType::FExit,
            Some("do_unlinkat"),
            Some(4),
            ProgramLinkStatus::Success,
            vec![(Detail::Trampoline, common.clone())],
        );
        assert_eq!(f.fexit.as_ref().unwrap().function, "do_unlinkat");
        assert_eq!(recorded(&f), vec![(Detail::Trampoline, common)]);
        let empty = program_entry(
            "t",
            &ProgramType::TracePoint,
            None,
            None,
            ProgramLinkStatus::Pending,
            vec![],
        );
        assert!(
            empty.tracepoint.is_some(),
            "the member is there without links"
        );
    }
}
