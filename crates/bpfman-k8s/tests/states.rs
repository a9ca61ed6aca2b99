//! State objects as upstream's agent writes them read into the Rust types, unknown status
//! strings survive, and what the types write reads back the same.

use bpfman_k8s::v1alpha1::{
    AppLoadStatus, BpfApplicationState, ClusterBpfApplicationState, LinkStatus, ProgramLinkStatus,
};
use serde::Deserialize;

fn docs() -> Vec<serde_json::Value> {
    let text = include_str!("fixtures/upstream-states.yaml");
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde_json::Value::deserialize(d).expect("yaml document"))
        .collect()
}

#[test]
fn upstream_written_states_deserialize() {
    let docs = docs();
    let cluster: ClusterBpfApplicationState =
        serde_json::from_value(docs[0].clone()).expect("cluster state");
    let status = cluster.status.as_ref().expect("status");
    assert_eq!(status.update_count, 2);
    assert_eq!(status.app_load_status, AppLoadStatus::LoadSuccess);
    assert_eq!(status.programs.len(), 10);
    let kprobe = status.programs[0].kprobe.as_ref().expect("kprobe member");
    assert_eq!(
        kprobe.links[0].common.link_id,
        Some(3_629_930_733),
        "ids above 2^31 read as u32"
    );
    let tc = status.programs[3].tc.as_ref().expect("tc member");
    assert_eq!(
        tc.links[1].netns_path.as_deref(),
        Some("/host/proc/3311/ns/net")
    );
    assert_eq!(
        tc.links[0].netns_path, None,
        "host links carry no netnsPath"
    );
    let tcx = status.programs[4].tcx.as_ref().expect("tcx member");
    assert_eq!(tcx.links[0].common.link_status, LinkStatus::AttachError);
    assert_eq!(
        status.programs[4].program_link_status,
        ProgramLinkStatus::Error
    );
    assert_eq!(status.programs[9].program_id, None);
    assert_eq!(
        cluster
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(bpfman_k8s::names::LABEL_OWNED_BY_PROGRAM))
            .map(String::as_str),
        Some("app-test")
    );

    let ns: BpfApplicationState =
        serde_json::from_value(docs[1].clone()).expect("namespaced state");
    let s = ns.status.as_ref().expect("status");
    assert_eq!(
        s.programs[0].xdp.as_ref().expect("xdp").links[0].netns_path,
        "/host/proc/3311/ns/net"
    );

    // What the types write reads back identically.
    let again: ClusterBpfApplicationState =
        serde_json::from_value(serde_json::to_value(&cluster).expect("serialize"))
            .expect("reparse");
    assert_eq!(again, cluster);
}

#[test]
fn unknown_status_strings_are_kept_not_refused() {
    let mut doc = docs()[0].clone();
    doc["status"]["appLoadStatus"] = "SomethingNewer".into();
    doc["status"]["programs"][0]["kprobe"]["links"][0]["linkStatus"] = "Detaching".into();
    let s: ClusterBpfApplicationState = serde_json::from_value(doc).expect("state");
    let status = s.status.expect("status");
    assert_eq!(
        status.app_load_status,
        AppLoadStatus::Other("SomethingNewer".into())
    );
    let out = serde_json::to_value(&status).expect("serialize");
    assert_eq!(out["appLoadStatus"], "SomethingNewer");
    assert_eq!(
        out["programs"][0]["kprobe"]["links"][0]["linkStatus"],
        "Detaching"
    );
}
