//! Owns turning one application program into the links it asks for on this node: interface
//! selectors (named interfaces, the node's primary interface, discovery with allowed and
//! excluded patterns), pod network namespaces and container processes chosen by label, and the
//! per-type attach parameters, each as both the State entry's fields ([`Detail`]) and the
//! daemon's attach request ([`AttachSpec`]). Pure: the node's interfaces and pods come in as
//! data, so every rule here has a unit test.

use std::collections::BTreeMap;
use std::net::IpAddr;

use bpfman_k8s::v1alpha1::{
    ClusterContainerSelector, ClusterNetworkNamespaceSelector, ClusterProgram, DEFAULT_PRIORITY,
    Direction, InterfaceSelector, ProgramType, TcProceedOn, XdpProceedOn,
};
use bpfman_types::{AttachSpec, NetHook, ProceedOn};

use crate::select::Selector;

/// What the node offers to expand against.
#[derive(Clone, Debug, Default)]
pub struct NodeView {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// The Node's `InternalIP` addresses.
    pub internal_ips: Vec<IpAddr>,
    /// Interfaces of the host network namespace with their addresses.
    pub interfaces: Vec<(String, Vec<IpAddr>)>,
    /// Running pods on this node whose sandboxes the container runtime reported.
    pub pods: Vec<PodView>,
    /// Why this node's pods are not known (the pod watch failing: no permission, no API
    /// server); a selector of pods then fails saying so rather than matching nothing.
    pub pods_error: Option<String>,
    /// Where the node's /proc is seen from the agent and the daemon (`/host/proc` in the
    /// DaemonSet, upstream's path; `/proc` for an agent on the host).
    pub proc_dir: String,
    /// Whether the application is a namespaced one: its network links may then only be
    /// inside its pods' own network namespaces, never the host's (a hostNetwork pod).
    pub confined: bool,
}

/// One running pod on this node, as the API and the container runtime describe it.
#[derive(Clone, Debug, Default)]
pub struct PodView {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    /// Containers with their host PIDs (running ones only).
    pub containers: Vec<(String, i32)>,
    /// `spec.hostNetwork`: the pod's containers run in the host's network namespace.
    pub host_network: bool,
}

/// The fields of one link's State entry besides the common ones (uuid, id, status).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Detail {
    Xdp {
        iface: String,
        netns: Option<String>,
        priority: i32,
        proceed_on: Vec<String>,
    },
    Tc {
        iface: String,
        netns: Option<String>,
        direction: String,
        priority: i32,
        proceed_on: Vec<String>,
    },
    Tcx {
        iface: String,
        netns: Option<String>,
        direction: String,
        priority: i32,
    },
    /// fentry/fexit: the function is the program's.
    Trampoline,
    Kprobe {
        function: String,
        offset: i64,
    },
    Kretprobe {
        function: String,
    },
    Tracepoint {
        name: String,
    },
    Uprobe {
        target: String,
        function: Option<String>,
        offset: i64,
        pid: Option<i32>,
        container_pid: Option<i32>,
    },
}

/// One link the spec asks for.
#[derive(Clone, Debug, PartialEq)]
pub struct Want {
    pub detail: Detail,
    pub attach: AttachSpec,
}

/// A program's links on this node, and what kept some from being expanded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Expanded {
    pub wants: Vec<Want>,
    /// Errors in the spec that no retry fixes (the message says what to change).
    pub problems: Vec<String>,
    /// Links the spec lists that matched nothing here, each with why (no pod, no interface).
    pub unmatched: Vec<String>,
}

/// Upstream's `/regex/` or exact-name patterns.
pub fn pattern_matches(pattern: &str, name: &str) -> Result<bool, String> {
    if pattern.len() >= 2 && pattern.starts_with('/') && pattern.ends_with('/') {
        let re = regex_lite::Regex::new(&format!("^(?:{})$", &pattern[1..pattern.len() - 1]))
            .map_err(|e| format!("interface pattern '{pattern}' is not a valid regex: {e}"))?;
        Ok(re.is_match(name))
    } else {
        Ok(pattern == name)
    }
}

/// The interfaces an interface selector names on the host, or why none.
fn host_interfaces(sel: &InterfaceSelector, node: &NodeView) -> Result<Vec<String>, String> {
    if let Some(d) = &sel.interfaces_discovery_config
        && d.interface_auto_discovery
    {
        let mut out = Vec::new();
        for (name, _) in &node.interfaces {
            if name == "lo" {
                continue;
            }
            let mut excluded = false;
            for p in &d.exclude_interfaces {
                excluded |= pattern_matches(p, name)?;
            }
            if excluded {
                continue;
            }
            let allowed = match &d.allowed_interfaces {
                Some(list) if !list.is_empty() => {
                    let mut any = false;
                    for p in list {
                        any |= pattern_matches(p, name)?;
                    }
                    any
                }
                _ => true,
            };
            if allowed {
                out.push(name.clone());
            }
        }
        return Ok(out);
    }
    if let Some(list) = &sel.interfaces
        && !list.is_empty()
    {
        return Ok(list.clone());
    }
    if sel.primary_node_interface == Some(true) {
        let found = node
            .interfaces
            .iter()
            .find(|(_, addrs)| addrs.iter().any(|a| node.internal_ips.contains(a)));
        return match found {
            Some((name, _)) => Ok(vec![name.clone()]),
            None => Err(format!(
                "primaryNodeInterface: no interface on node {} holds its InternalIP ({})",
                node.name,
                if node.internal_ips.is_empty() {
                    "the Node has none".to_string()
                } else {
                    node.internal_ips
                        .iter()
                        .map(|a| a.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            )),
        };
    }
    Err("interfaceSelector names no interface: give interfaces, primaryNodeInterface: true or interfacesDiscoveryConfig".into())
}

/// Interfaces inside a pod: discovery and the primary interface mean nothing there, so only
/// named interfaces are taken (upstream does the same).
fn pod_interfaces(sel: &InterfaceSelector) -> Result<Vec<String>, String> {
    match &sel.interfaces {
        Some(list) if !list.is_empty() => Ok(list.clone()),
        _ => Err("inside pods (networkNamespaces), interfaceSelector must name interfaces".into()),
    }
}

/// The pods a selector picks, confined to `namespace` when it is set.
fn selected_pods<'a>(
    node: &'a NodeView,
    namespace: Option<&str>,
    pods: &Selector,
) -> Vec<&'a PodView> {
    node.pods
        .iter()
        .filter(|p| namespace.is_none_or(|ns| p.namespace == ns))
        .filter(|p| pods.matches(&p.labels))
        .collect()
}

/// Where the links of one network link spec go: (netns path or host, interface), or why
/// nowhere.
fn network_targets(
    sel: &InterfaceSelector,
    netns: Option<&ClusterNetworkNamespaceSelector>,
    node: &NodeView,
    out: &mut Expanded,
    what: &str,
) -> Vec<(Option<String>, String)> {
    match netns {
        None => match host_interfaces(sel, node) {
            Ok(ifaces) => {
                if ifaces.is_empty() {
                    out.unmatched
                        .push(format!("{what}: interface discovery found no interface on node {} that the allowed/excluded patterns let through", node.name));
                }
                ifaces.into_iter().map(|i| (None, i)).collect()
            }
            Err(e) => {
                out.problems.push(format!("{what}: {e}"));
                Vec::new()
            }
        },
        Some(ns) => {
            let ifaces = match pod_interfaces(sel) {
                Ok(i) => i,
                Err(e) => {
                    out.problems.push(format!("{what}: {e}"));
                    return Vec::new();
                }
            };
            let pods = match Selector::new(&ns.pods) {
                Ok(s) => s,
                Err(e) => {
                    out.problems
                        .push(format!("{what}: networkNamespaces.pods: {e}"));
                    return Vec::new();
                }
            };
            if let Some(e) = &node.pods_error {
                out.problems.push(format!(
                    "{what}: networkNamespaces: this node's pods are not known: {e}"
                ));
                return Vec::new();
            }
            let chosen = selected_pods(node, ns.namespace.as_deref(), &pods);
            if chosen.is_empty() {
                out.unmatched.push(format!(
                    "{what}: no running pod on node {} matches networkNamespaces{}",
                    node.name,
                    ns.namespace
                        .as_deref()
                        .map(|n| format!(" in namespace {n}"))
                        .unwrap_or_default()
                ));
            }
            let mut targets = Vec::new();
            for p in chosen {
                // One container per pod: they share the pod's network namespace.
                let Some((_, pid)) = p.containers.first() else {
                    out.unmatched.push(format!(
                        "{what}: pod {}/{} has no running container yet",
                        p.namespace, p.name
                    ));
                    continue;
                };
                let path = format!("{}/{pid}/ns/net", node.proc_dir);
                if node.confined && (p.host_network || in_host_netns(&node.proc_dir, &path)) {
                    out.problems.push(format!(
                        "{what}: pod {}/{} runs in the host's network namespace (hostNetwork): a namespaced BpfApplication may attach only inside its pods' own network namespaces",
                        p.namespace, p.name
                    ));
                    continue;
                }
                for i in &ifaces {
                    targets.push((Some(path.clone()), i.clone()));
                }
            }
            targets
        }
    }
}

/// Whether `netns` is, or cannot be told apart from, the host's network namespace: that of
/// PID 1 under `proc_dir` (when it can be read) or the agent's own (it runs in the host's,
/// like upstream's DaemonSet with hostNetwork). A namespace that cannot be read counts as
/// the host's.
fn in_host_netns(proc_dir: &str, netns: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let id = |p: &str| std::fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
    let Some(pod) = id(netns) else { return true };
    [
        format!("{proc_dir}/1/ns/net"),
        "/proc/self/ns/net".to_string(),
    ]
    .iter()
    .any(|h| id(h) == Some(pod))
}

fn priority(p: Option<i32>, what: &str, out: &mut Expanded) -> Option<i32> {
    let p = p.unwrap_or(DEFAULT_PRIORITY);
    if (0..=1000).contains(&p) {
        Some(p)
    } else {
        out.problems
            .push(format!("{what}: priority {p} is outside 0..=1000"));
        None
    }
}

fn codes(
    names: Vec<Option<&'static str>>,
    spelt: Vec<String>,
    table: ProceedOn,
    what: &str,
    out: &mut Expanded,
) -> Option<Vec<i32>> {
    let mut codes = Vec::new();
    for (n, s) in names.into_iter().zip(spelt) {
        match n.and_then(|n| table.code(n)) {
            Some(c) => codes.push(c),
            None => {
                out.problems
                    .push(format!("{what}: unknown proceedOn value '{s}'"));
                return None;
            }
        }
    }
    Some(codes)
}

fn direction(d: &Direction, what: &str, out: &mut Expanded) -> Option<bpfman_types::Direction> {
    match d {
        Direction::Ingress => Some(bpfman_types::Direction::Ingress),
        Direction::Egress => Some(bpfman_types::Direction::Egress),
        Direction::Other(s) => {
            out.problems.push(format!(
                "{what}: unknown direction '{s}': use Ingress or Egress"
            ));
            None
        }
    }
}

fn offset(o: i64, what: &str, out: &mut Expanded) -> Option<u64> {
    match u64::try_from(o) {
        Ok(v) => Some(v),
        Err(_) => {
            out.problems.push(format!(
                "{what}: offset {o} is negative; give an offset >= 0"
            ));
            None
        }
    }
}

/// The containers a uprobe's `containers` selector picks: (container pid) per match.
fn container_pids(
    sel: &ClusterContainerSelector,
    node: &NodeView,
    out: &mut Expanded,
    what: &str,
) -> Vec<i32> {
    let pods = match Selector::new(&sel.pods) {
        Ok(s) => s,
        Err(e) => {
            out.problems.push(format!("{what}: containers.pods: {e}"));
            return Vec::new();
        }
    };
    if let Some(e) = &node.pods_error {
        out.problems.push(format!(
            "{what}: containers: this node's pods are not known: {e}"
        ));
        return Vec::new();
    }
    let names = sel.container_names.clone().unwrap_or_default();
    let mut pids = Vec::new();
    for p in selected_pods(node, sel.namespace.as_deref(), &pods) {
        for (c, pid) in &p.containers {
            if names.is_empty() || names.contains(c) {
                pids.push(*pid);
            }
        }
    }
    if pids.is_empty() {
        out.unmatched.push(format!(
            "{what}: no running container on node {} matches containers{}",
            node.name,
            sel.namespace
                .as_deref()
                .map(|n| format!(" in namespace {n}"))
                .unwrap_or_default()
        ));
    }
    pids
}

/// The links one network link spec expands to: one per (network namespace, interface) it
/// reaches, each with its State fields (`detail`) and its hook.
#[allow(clippy::too_many_arguments)]
fn push_network(
    out: &mut Expanded,
    node: &NodeView,
    what: &str,
    sel: &InterfaceSelector,
    netns_sel: Option<&ClusterNetworkNamespaceSelector>,
    hook: (i32, Vec<i32>, Option<bpfman_types::Direction>),
    attach: fn(NetHook) -> AttachSpec,
    detail: impl Fn(String, Option<String>) -> Detail,
) {
    let (priority, proceed_on, direction) = hook;
    for (netns, iface) in network_targets(sel, netns_sel, node, out, what) {
        out.wants.push(Want {
            detail: detail(iface.clone(), netns.clone()),
            attach: attach(NetHook {
                iface,
                priority,
                proceed_on: proceed_on.clone(),
                netns,
                direction,
            }),
        });
    }
}

/// Expands one program's links on `node`.
pub fn expand(program: &ClusterProgram, node: &NodeView) -> Expanded {
    let mut out = Expanded::default();
    let name = &program.name;
    match &program.type_ {
        ProgramType::Xdp => {
            for (i, l) in program.xdp.iter().flat_map(|m| &m.links).enumerate() {
                let what = format!("program {name}: xdp.links[{i}]");
                let Some(prio) = priority(l.priority, &what, &mut out) else {
                    continue;
                };
                let Some(po) = codes(
                    l.proceed_on.iter().map(XdpProceedOn::bpfman_name).collect(),
                    l.proceed_on
                        .iter()
                        .map(|p| p.as_str().to_string())
                        .collect(),
                    ProceedOn::Xdp,
                    &what,
                    &mut out,
                ) else {
                    continue;
                };
                let names: Vec<String> = l
                    .proceed_on
                    .iter()
                    .map(|p| p.as_str().to_string())
                    .collect();
                push_network(
                    &mut out,
                    node,
                    &what,
                    &l.interface_selector,
                    l.network_namespaces.as_ref(),
                    (prio, po, None),
                    AttachSpec::Xdp,
                    |iface, netns| Detail::Xdp {
                        iface,
                        netns,
                        priority: prio,
                        proceed_on: names.clone(),
                    },
                );
            }
        }
        ProgramType::Tc => {
            for (i, l) in program.tc.iter().flat_map(|m| &m.links).enumerate() {
                let what = format!("program {name}: tc.links[{i}]");
                let (Some(prio), Some(dir)) = (
                    priority(l.priority, &what, &mut out),
                    direction(&l.direction, &what, &mut out),
                ) else {
                    continue;
                };
                let Some(po) = codes(
                    l.proceed_on.iter().map(TcProceedOn::bpfman_name).collect(),
                    l.proceed_on
                        .iter()
                        .map(|p| p.as_str().to_string())
                        .collect(),
                    ProceedOn::Tc,
                    &what,
                    &mut out,
                ) else {
                    continue;
                };
                let names: Vec<String> = l
                    .proceed_on
                    .iter()
                    .map(|p| p.as_str().to_string())
                    .collect();
                push_network(
                    &mut out,
                    node,
                    &what,
                    &l.interface_selector,
                    l.network_namespaces.as_ref(),
                    (prio, po, Some(dir)),
                    AttachSpec::Tc,
                    |iface, netns| Detail::Tc {
                        iface,
                        netns,
                        direction: l.direction.as_str().to_string(),
                        priority: prio,
                        proceed_on: names.clone(),
                    },
                );
            }
        }
        ProgramType::Tcx => {
            for (i, l) in program.tcx.iter().flat_map(|m| &m.links).enumerate() {
                let what = format!("program {name}: tcx.links[{i}]");
                let (Some(prio), Some(dir)) = (
                    priority(l.priority, &what, &mut out),
                    direction(&l.direction, &what, &mut out),
                ) else {
                    continue;
                };
                push_network(
                    &mut out,
                    node,
                    &what,
                    &l.interface_selector,
                    l.network_namespaces.as_ref(),
                    (prio, Vec::new(), Some(dir)),
                    AttachSpec::Tcx,
                    |iface, netns| Detail::Tcx {
                        iface,
                        netns,
                        direction: l.direction.as_str().to_string(),
                        priority: prio,
                    },
                );
            }
        }
        ProgramType::FEntry | ProgramType::FExit => {
            let member = if program.type_ == ProgramType::FEntry {
                &program.fentry
            } else {
                &program.fexit
            };
            if let Some(f) = member
                && !f.links.is_empty()
            {
                out.wants.push(Want {
                    detail: Detail::Trampoline,
                    attach: if program.type_ == ProgramType::FEntry {
                        AttachSpec::Fentry
                    } else {
                        AttachSpec::Fexit
                    },
                });
            }
        }
        ProgramType::KProbe => {
            for (i, l) in program.kprobe.iter().flat_map(|m| &m.links).enumerate() {
                let what = format!("program {name}: kprobe.links[{i}]");
                let Some(off) = offset(l.offset, &what, &mut out) else {
                    continue;
                };
                out.wants.push(Want {
                    detail: Detail::Kprobe {
                        function: l.function.clone(),
                        offset: l.offset,
                    },
                    attach: AttachSpec::Kprobe {
                        fn_name: l.function.clone(),
                        offset: off,
                        container_pid: None,
                    },
                });
            }
        }
        ProgramType::KRetProbe => {
            for l in program.kretprobe.iter().flat_map(|m| &m.links) {
                out.wants.push(Want {
                    detail: Detail::Kretprobe {
                        function: l.function.clone(),
                    },
                    attach: AttachSpec::Kprobe {
                        fn_name: l.function.clone(),
                        offset: 0,
                        container_pid: None,
                    },
                });
            }
        }
        ProgramType::TracePoint => {
            for l in program.tracepoint.iter().flat_map(|m| &m.links) {
                out.wants.push(Want {
                    detail: Detail::Tracepoint {
                        name: l.name.clone(),
                    },
                    attach: AttachSpec::Tracepoint {
                        tracepoint: l.name.clone(),
                    },
                });
            }
        }
        ProgramType::UProbe | ProgramType::URetProbe => {
            let member = if program.type_ == ProgramType::UProbe {
                &program.uprobe
            } else {
                &program.uretprobe
            };
            for (i, l) in member.iter().flat_map(|m| &m.links).enumerate() {
                let what = format!("program {name}: uprobe.links[{i}]");
                let Some(off) = offset(l.offset, &what, &mut out) else {
                    continue;
                };
                let pids: Vec<Option<i32>> = match &l.containers {
                    None => vec![None],
                    Some(sel) => container_pids(sel, node, &mut out, &what)
                        .into_iter()
                        .map(Some)
                        .collect(),
                };
                for cpid in pids {
                    out.wants.push(Want {
                        detail: Detail::Uprobe {
                            target: l.target.clone(),
                            function: l.function.clone(),
                            offset: l.offset,
                            pid: l.pid,
                            container_pid: cpid,
                        },
                        attach: AttachSpec::Uprobe {
                            fn_name: l.function.clone(),
                            offset: off,
                            target: l.target.clone(),
                            pid: l.pid,
                            container_pid: cpid,
                        },
                    });
                }
            }
        }
        ProgramType::Other(t) => out.problems.push(format!(
            "program {name}: type '{t}' is not one this agent knows"
        )),
    }
    // The same link twice (two selectors reaching one interface) is one link.
    let mut seen = std::collections::BTreeSet::new();
    out.wants.retain(|w| seen.insert(w.detail.clone()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeView {
        NodeView {
            name: "n1".into(),
            internal_ips: vec!["10.9.0.5".parse().unwrap()],
            interfaces: vec![
                ("lo".into(), vec!["127.0.0.1".parse().unwrap()]),
                ("eth0".into(), vec!["10.9.0.5".parse().unwrap()]),
                ("veth1".into(), vec![]),
                ("veth2".into(), vec![]),
                ("cni0".into(), vec![]),
            ],
            pods_error: None,
            pods: vec![
                PodView {
                    namespace: "a".into(),
                    name: "web".into(),
                    uid: "u1".into(),
                    labels: [("app".to_string(), "web".to_string())].into(),
                    containers: vec![("c".into(), 4242)],
                    ..Default::default()
                },
                PodView {
                    namespace: "b".into(),
                    name: "web".into(),
                    uid: "u2".into(),
                    labels: [("app".to_string(), "web".to_string())].into(),
                    containers: vec![("c".into(), 5151), ("side".into(), 5152)],
                    ..Default::default()
                },
            ],
            proc_dir: "/host/proc".into(),
            ..Default::default()
        }
    }

    fn program(yaml: &str) -> ClusterProgram {
        serde_yaml_ng(yaml)
    }

    fn serde_yaml_ng(yaml: &str) -> ClusterProgram {
        let v: serde_json::Value = serde_json::from_str(yaml).expect("test json");
        serde_json::from_value(v).expect("a program")
    }

    fn ifaces(e: &Expanded) -> Vec<(Option<String>, String)> {
        e.wants
            .iter()
            .filter_map(|w| match &w.detail {
                Detail::Xdp { iface, netns, .. } => Some((netns.clone(), iface.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn named_primary_and_discovered_interfaces() {
        let e = expand(
            &program(
                r#"{"name":"p","type":"XDP","xdp":{"links":[{"interfaceSelector":{"interfaces":["veth1","veth1"]},"priority":50}]}}"#,
            ),
            &node(),
        );
        assert_eq!(ifaces(&e), vec![(None, "veth1".to_string())]);
        match &e.wants[0].attach {
            AttachSpec::Xdp(h) => {
                assert_eq!(h.priority, 50);
                assert_eq!(h.proceed_on, vec![2, 31], "default Pass, DispatcherReturn");
            }
            other => panic!("{other:?}"),
        }
        let e = expand(
            &program(
                r#"{"name":"p","type":"XDP","xdp":{"links":[{"interfaceSelector":{"primaryNodeInterface":true}}]}}"#,
            ),
            &node(),
        );
        assert_eq!(ifaces(&e), vec![(None, "eth0".to_string())]);
        match &e.wants[0].detail {
            Detail::Xdp { priority, .. } => assert_eq!(*priority, 1000),
            other => panic!("{other:?}"),
        }
        let e = expand(
            &program(
                r#"{"name":"p","type":"XDP","xdp":{"links":[{"interfaceSelector":{"interfacesDiscoveryConfig":{"interfaceAutoDiscovery":true,"allowedInterfaces":["/veth.*/","cni0"],"excludeInterfaces":["veth2"]}}}]}}"#,
            ),
            &node(),
        );
        assert_eq!(
            ifaces(&e),
            vec![(None, "veth1".to_string()), (None, "cni0".to_string())]
        );
        let mut n = node();
        n.internal_ips = vec!["10.1.1.1".parse().unwrap()];
        let e = expand(
            &program(
                r#"{"name":"p","type":"XDP","xdp":{"links":[{"interfaceSelector":{"primaryNodeInterface":true}}]}}"#,
            ),
            &n,
        );
        assert!(e.wants.is_empty());
        assert!(
            e.problems[0].contains("InternalIP (10.1.1.1)"),
            "{:?}",
            e.problems
        );
    }

    #[test]
    fn pods_by_label_and_namespace_one_container_each() {
        let e = expand(
            &program(
                r#"{"name":"p","type":"XDP","xdp":{"links":[{"interfaceSelector":{"interfaces":["eth0"]},"networkNamespaces":{"namespace":"b","pods":{"matchLabels":{"app":"web"}}}}]}}"#,
            ),
            &node(),
        );
        assert_eq!(
            ifaces(&e),
            vec![(
                Some("/host/proc/5151/ns/net".to_string()),
                "eth0".to_string()
            )]
        );
        let e = expand(
            &program(
                r#"{"name":"p","type":"XDP","xdp":{"links":[{"interfaceSelector":{"interfaces":["eth0"]},"networkNamespaces":{"pods":{"matchLabels":{"app":"db"}}}}]}}"#,
            ),
            &node(),
        );
        assert!(e.wants.is_empty());
        assert!(
            e.unmatched[0].contains("no running pod on node n1"),
            "{:?}",
            e.unmatched
        );
    }

    #[test]
    fn a_namespaced_application_never_gets_the_hosts_network_namespace() {
        let xdp = program(
            r#"{"name":"p","type":"XDP","xdp":{"links":[{"interfaceSelector":{"interfaces":["eth0"]},"networkNamespaces":{"namespace":"b","pods":{}}}]}}"#,
        );
        // hostNetwork said by the API.
        let mut n = node();
        n.confined = true;
        n.pods[1].host_network = true;
        let e = expand(&xdp, &n);
        assert!(e.wants.is_empty());
        assert!(e.problems[0].contains("hostNetwork"), "{:?}", e.problems);
        // Not said, but the pod's process is in the host's network namespace (this test's own
        // process), or its namespace cannot be read: refused too.
        let mut n = node();
        n.confined = true;
        n.proc_dir = "/proc".into();
        n.pods[1].containers = vec![("c".into(), std::process::id() as i32)];
        let e = expand(&xdp, &n);
        assert!(e.wants.is_empty() && e.problems.len() == 1, "{e:?}");
        n.pods[1].containers = vec![("c".into(), i32::MAX)];
        let e = expand(&xdp, &n);
        assert!(e.wants.is_empty() && e.problems.len() == 1, "{e:?}");
        // A cluster application may (its admin can attach on the host anyway).
        let mut n = node();
        n.pods[1].host_network = true;
        assert_eq!(expand(&xdp, &n).wants.len(), 1);
    }

    #[test]
    fn uprobe_containers_by_name() {
        let e = expand(
            &program(
                r#"{"name":"p","type":"UProbe","uprobe":{"links":[{"target":"/bin/x","function":"main","containers":{"pods":{},"containerNames":["side"]}}]}}"#,
            ),
            &node(),
        );
        assert_eq!(e.wants.len(), 1);
        assert!(matches!(
            e.wants[0].attach,
            AttachSpec::Uprobe {
                container_pid: Some(5152),
                ..
            }
        ));
    }

    #[test]
    fn spec_errors_name_the_link_and_the_fix() {
        let e = expand(
            &program(
                r#"{"name":"p","type":"KProbe","kprobe":{"links":[{"function":"f","offset":-4}]}}"#,
            ),
            &node(),
        );
        assert!(e.problems[0].contains("kprobe.links[0]: offset -4 is negative"));
        let e = expand(
            &program(
                r#"{"name":"p","type":"TC","tc":{"links":[{"interfaceSelector":{"interfaces":["veth1"]},"direction":"Sideways"}]}}"#,
            ),
            &node(),
        );
        assert!(e.problems[0].contains("unknown direction 'Sideways'"));
        let e = expand(
            &program(
                r#"{"name":"p","type":"XDP","xdp":{"links":[{"interfaceSelector":{"interfacesDiscoveryConfig":{"interfaceAutoDiscovery":true,"allowedInterfaces":["/(/"]}}}]}}"#,
            ),
            &node(),
        );
        assert!(
            e.problems[0].contains("not a valid regex"),
            "{:?}",
            e.problems
        );
        let e = expand(
            &program(
                r#"{"name":"p","type":"XDP","xdp":{"links":[{"interfaceSelector":{"interfaces":["eth0"]},"networkNamespaces":{"pods":{"matchExpressions":[{"key":"a","operator":"In","values":[]}]}}}]}}"#,
            ),
            &node(),
        );
        assert!(
            e.problems[0].contains("needs at least one value"),
            "{:?}",
            e.problems
        );
    }

    #[test]
    fn unspec_tc_proceed_on_is_honoured() {
        let e = expand(
            &program(
                r#"{"name":"p","type":"TC","tc":{"links":[{"interfaceSelector":{"interfaces":["veth1"]},"direction":"Ingress","proceedOn":["UnSpec","Pipe"]}]}}"#,
            ),
            &node(),
        );
        match &e.wants[0].attach {
            AttachSpec::Tc(h) => assert_eq!(h.proceed_on, vec![-1, 3]),
            other => panic!("{other:?}"),
        }
    }
}
