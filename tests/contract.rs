//! What a client written for upstream's daemon observes through `bpfman.v1`, checked
//! through the real API against the real kernel (ids looked up in the kernel's own id
//! tables, without taking references): programs loaded together are peers; Get of a
//! program bpfman does not manage is NOT_FOUND; Detach and Unload are done when they
//! return, also with both cores busy. Runs as root.

mod common;

use std::process::{Child, Command};
use std::time::Duration;

use bpfman::inspect::{Object, opens};
use bpfman_api::ext::{self, bpfman_ext_client::BpfmanExtClient};
use bpfman_api::v1::{self, bpfman_client::BpfmanClient};
use common::{Daemon, Netns, has_feature, obj, read_counter};
use tonic::transport::Channel;

/// A v1 (and ext) client on the daemon's socket, driven synchronously.
struct Api {
    rt: tokio::runtime::Runtime,
    v1: BpfmanClient<Channel>,
    ext: BpfmanExtClient<Channel>,
}

impl Api {
    fn new(d: &Daemon) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let url = format!("unix://{}", d.socket.display());
        let ch = rt
            .block_on(async move {
                tonic::transport::Endpoint::from_shared(url)
                    .expect("endpoint")
                    .connect()
                    .await
            })
            .expect("connecting to the daemon");
        Self {
            rt,
            v1: BpfmanClient::new(ch.clone()),
            ext: BpfmanExtClient::new(ch),
        }
    }

    fn load(&mut self, req: v1::LoadRequest) -> Result<Vec<v1::LoadResponseInfo>, tonic::Status> {
        let c = &mut self.v1;
        self.rt
            .block_on(c.load(req))
            .map(|r| r.into_inner().programs)
    }

    fn attach_tp(&mut self, id: u32, tracepoint: &str) -> u32 {
        let req = v1::AttachRequest {
            id,
            attach: Some(v1::AttachInfo {
                info: Some(v1::attach_info::Info::TracepointAttachInfo(
                    v1::TracepointAttachInfo {
                        tracepoint: tracepoint.into(),
                        metadata: Default::default(),
                    },
                )),
            }),
        };
        let c = &mut self.v1;
        self.rt
            .block_on(c.attach(req))
            .expect("attach")
            .into_inner()
            .link_id
    }

    fn detach(&mut self, link_id: u32) {
        let c = &mut self.v1;
        self.rt
            .block_on(c.detach(v1::DetachRequest { link_id }))
            .expect("detach");
    }

    fn unload(&mut self, id: u32) -> Result<(), tonic::Status> {
        let c = &mut self.v1;
        self.rt
            .block_on(c.unload(v1::UnloadRequest { id }))
            .map(|_| ())
    }

    fn get(&mut self, id: u32) -> Result<v1::GetResponse, tonic::Status> {
        let c = &mut self.v1;
        self.rt
            .block_on(c.get(v1::GetRequest { id }))
            .map(|r| r.into_inner())
    }

    fn attach_tcx(&mut self, id: u32, iface: &str, priority: i32) -> u32 {
        let req = v1::AttachRequest {
            id,
            attach: Some(v1::AttachInfo {
                info: Some(v1::attach_info::Info::TcxAttachInfo(v1::TcxAttachInfo {
                    priority,
                    iface: iface.into(),
                    position: 0,
                    direction: "ingress".into(),
                    netns: None,
                    metadata: Default::default(),
                })),
            }),
        };
        let c = &mut self.v1;
        self.rt
            .block_on(c.attach(req))
            .expect("attach tcx")
            .into_inner()
            .link_id
    }

    /// The daemon's per-key tables, by name, and its program and link counts.
    fn tables(&mut self) -> (std::collections::BTreeMap<String, u64>, u64, u64) {
        let c = &mut self.ext;
        let i = self
            .rt
            .block_on(c.system_info(ext::SystemInfoRequest {}))
            .expect("system info")
            .into_inner();
        (i.tables.into_iter().collect(), i.programs, i.links)
    }

    fn kernel_link_id(&mut self, link_id: u32) -> u32 {
        let c = &mut self.ext;
        self.rt
            .block_on(c.get_link(ext::GetLinkRequest { link_id }))
            .expect("get link")
            .into_inner()
            .kernel_link_id
    }
}

fn tracepoint_load(names: &[&str], map_owner_id: Option<u32>) -> v1::LoadRequest {
    v1::LoadRequest {
        bytecode: Some(v1::BytecodeLocation {
            location: Some(v1::bytecode_location::Location::File(obj(
                "tracing_test.bpf.o",
            ))),
        }),
        metadata: Default::default(),
        global_data: Default::default(),
        uuid: None,
        map_owner_id,
        info: names
            .iter()
            .map(|n| v1::LoadInfo {
                name: n.to_string(),
                program_type: v1::BpfmanProgramType::Tracepoint as i32,
                info: None,
            })
            .collect(),
    }
}

fn id_of(p: &v1::LoadResponseInfo) -> u32 {
    p.kernel_info.as_ref().expect("kernel info").id
}

fn getppid_syscalls(n: u32) {
    for _ in 0..n {
        // SAFETY: getppid has no arguments and cannot fail.
        unsafe {
            libc::syscall(libc::SYS_getppid);
        }
    }
}

/// Point 1: a Load of several programs without map_owner_id returns peers (no map
/// owner among them); either may be unloaded first, the other keeps the shared maps,
/// and the maps go with the last one. An asked-for map owner keeps its rule.
#[test]
fn programs_loaded_together_are_peers() {
    require_root!();
    let d = Daemon::start();
    let mut api = Api::new(&d);
    let progs = api
        .load(tracepoint_load(&["tp_count", "tp_shared"], None))
        .expect("load");
    assert_eq!(progs.len(), 2);
    for p in &progs {
        let info = p.info.as_ref().expect("info");
        assert_eq!(
            info.map_owner_id, None,
            "{}: a peer has no map owner",
            info.name
        );
    }
    let dir = progs[0].info.as_ref().expect("info").map_pin_path.clone();
    assert_eq!(dir, progs[1].info.as_ref().expect("info").map_pin_path);
    let (first, second) = (id_of(&progs[0]), id_of(&progs[1]));
    let shared_maps = |p: &v1::LoadResponseInfo| p.kernel_info.as_ref().expect("k").map_ids.clone();
    // One set of maps for the object: what both use (its .rodata) is the same map.
    let (a, b) = (shared_maps(&progs[0]), shared_maps(&progs[1]));
    assert!(
        a.iter().any(|m| b.contains(m)),
        "peers share no map: {a:?} / {b:?}"
    );

    // The second works on after the first is unloaded, with the same maps.
    api.attach_tp(second, "syscalls/sys_enter_getppid");
    api.unload(first)
        .expect("unloading the first peer while the second is loaded");
    assert!(!opens(Object::Program, first).expect("asking"));
    let before = read_counter(&std::path::Path::new(&dir).join("shared_hits"));
    getppid_syscalls(50);
    let after = read_counter(&std::path::Path::new(&dir).join("shared_hits"));
    assert!(after >= before + 50, "shared_hits {before} -> {after}");
    assert!(std::path::Path::new(&dir).exists());
    api.unload(second).expect("unloading the last peer");
    assert!(
        !std::path::Path::new(&dir).exists(),
        "the shared maps outlived the last program using them: {dir}"
    );

    // In the other order too, with an asked-for owner beside them: the owner rule
    // stands (its users first).
    let owner = api
        .load(tracepoint_load(&["tp_count"], None))
        .expect("load");
    let owner_id = id_of(&owner[0]);
    let user = api
        .load(tracepoint_load(&["tp_shared"], Some(owner_id)))
        .expect("load with a map owner");
    assert_eq!(
        user[0].info.as_ref().expect("info").map_owner_id,
        Some(owner_id)
    );
    let e = api
        .unload(owner_id)
        .expect_err("the owner goes after its users");
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    api.unload(id_of(&user[0])).expect("unload user");
    api.unload(owner_id).expect("unload owner");
    let peers = api
        .load(tracepoint_load(&["tp_count", "tp_shared"], None))
        .expect("load");
    api.unload(id_of(&peers[1])).expect("the second peer first");
    api.unload(id_of(&peers[0])).expect("then the first");
    assert!(d.pins().is_empty(), "left behind: {:?}", d.pins());
}

/// Point 2: Get answers only for programs bpfman manages.
#[test]
fn get_of_a_program_bpfman_does_not_manage_is_not_found() {
    require_root!();
    let d = Daemon::start();
    let mut api = Api::new(&d);
    // A program in the kernel that bpfman did not load (bpftool pins it elsewhere).
    let pin = format!("/sys/fs/bpf/bpfman-contract-{}", std::process::id());
    let st = Command::new("bpftool")
        .args(["prog", "load", &obj("xdp_test.bpf.o"), &pin, "type", "xdp"])
        .status()
        .expect("bpftool");
    assert!(st.success(), "bpftool prog load");
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show", "pinned", &pin])
        .output()
        .expect("bpftool");
    let foreign: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool json");
    let foreign = foreign["id"].as_u64().expect("id") as u32;
    let mine = api
        .load(tracepoint_load(&["tp_count"], None))
        .expect("load");
    let mine = id_of(&mine[0]);
    assert!(api.get(mine).is_ok());
    assert!(
        opens(Object::Program, foreign).expect("asking"),
        "bpftool's program is gone"
    );
    for id in [foreign, 0x7fff_fff0] {
        let e = api
            .get(id)
            .expect_err("Get of a program bpfman does not manage");
        assert_eq!(e.code(), tonic::Code::NotFound, "{id}: {e:?}");
    }
    std::fs::remove_file(&pin).expect("removing bpftool's pin");
    api.unload(mine).expect("unload");
    let e = api.get(mine).expect_err("Get after Unload");
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
}

/// Two processes spinning, one per core, for as long as the value lives.
struct Busy(Vec<Child>);

impl Busy {
    fn start() -> Self {
        Self(
            (0..2)
                .map(|_| {
                    Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .spawn()
                        .expect("spawning a busy loop")
                })
                .collect(),
        )
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Point 3: when Detach returns the kernel link id no longer opens; when Unload returns
/// the program id does not, and Get says NOT_FOUND. 30 rounds, both cores busy.
#[test]
fn detach_and_unload_are_done_when_they_return() {
    require_root!();
    let d = Daemon::start();
    let mut api = Api::new(&d);
    let _busy = Busy::start();
    let (mut late_links, mut late_programs, mut get_hits) = (0, 0, 0);
    for _ in 0..30 {
        let p = api
            .load(tracepoint_load(&["tp_count"], None))
            .expect("load");
        let id = id_of(&p[0]);
        let link = api.attach_tp(id, "syscalls/sys_enter_getpid");
        let klink = api.kernel_link_id(link);
        assert!(
            opens(Object::Link, klink).expect("asking"),
            "link {klink} not in the kernel"
        );
        api.detach(link);
        if opens(Object::Link, klink).expect("asking") {
            late_links += 1;
        }
        // Attached again and unloaded with the link on it: Unload detaches it too.
        let link = api.attach_tp(id, "syscalls/sys_enter_getpid");
        let klink = api.kernel_link_id(link);
        api.unload(id).expect("unload");
        if opens(Object::Program, id).expect("asking")
            || opens(Object::Link, klink).expect("asking")
        {
            late_programs += 1;
        }
        if api.get(id).is_ok() {
            get_hits += 1;
        }
    }
    eprintln!(
        "30 rounds, both cores busy: {late_links} late links, {late_programs} late programs, \
         {get_hits} Get hits after Unload"
    );
    assert_eq!((late_links, late_programs, get_hits), (0, 0, 0));
    // The reapers finish their grace periods off the request path; nothing is left.
    std::thread::sleep(Duration::from_millis(500));
    assert!(d.pins().is_empty(), "left behind: {:?}", d.pins());
}

/// 1,000 load/attach/detach/unload cycles from 4 clients at once (TCX on one veth, and
/// every tenth cycle a load of two peers unloaded in reverse order) leave the daemon's
/// per-key tables as they started: locks, reservations, remembered facts and pulls in
/// flight all go when nothing is in progress, so a controller churning programs for
/// weeks does not grow the daemon.
#[test]
fn churn_leaves_the_daemons_tables_as_they_started() {
    require_root!();
    let d = Daemon::start();
    if !has_feature(&d, "tcx") {
        eprintln!("SKIP churn: it attaches through TCX, which this kernel lacks");
        return;
    }
    let ns = Netns::new();
    let mut api = Api::new(&d);
    let (start, _, _) = api.tables();
    assert!(start.contains_key("locks"), "{start:?}");
    let tc = |name: &str| v1::LoadRequest {
        bytecode: Some(v1::BytecodeLocation {
            location: Some(v1::bytecode_location::Location::File(obj("tc_test.bpf.o"))),
        }),
        metadata: Default::default(),
        global_data: Default::default(),
        uuid: None,
        map_owner_id: None,
        info: vec![v1::LoadInfo {
            name: name.into(),
            program_type: v1::BpfmanProgramType::Tcx as i32,
            info: None,
        }],
    };
    let t0 = std::time::Instant::now();
    std::thread::scope(|s| {
        for t in 0..4 {
            let (d, iface, tc) = (&d, ns.host_if.clone(), &tc);
            s.spawn(move || {
                let mut api = Api::new(d);
                for i in 0..250 {
                    let p = api.load(tc("tc_count")).expect("load");
                    let id = id_of(&p[0]);
                    let link = api.attach_tcx(id, &iface, 100 + t);
                    api.detach(link);
                    api.unload(id).expect("unload");
                    if i % 10 == 0 {
                        let peers = api
                            .load(tracepoint_load(&["tp_count", "tp_shared"], None))
                            .expect("peers");
                        api.unload(id_of(&peers[1])).expect("unload peer");
                        api.unload(id_of(&peers[0])).expect("unload peer");
                    }
                }
            });
        }
    });
    let (end, programs, links) = api.tables();
    eprintln!(
        "1,000 cycles (+100 peer loads) from 4 clients in {:?}; tables before {start:?}, \
         after {end:?}",
        t0.elapsed()
    );
    assert_eq!((programs, links), (0, 0));
    assert_eq!(end, start, "the daemon's tables grew with churn");
    assert!(d.pins().is_empty(), "left behind: {:?}", d.pins());
}
