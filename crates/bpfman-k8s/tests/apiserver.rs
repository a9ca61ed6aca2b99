//! The bpfman.io CRDs against a real kube-apiserver + etcd (+ kube-controller-manager), started
//! by bpfman-k8s-testenv from the binaries scripts/k8s-bins.sh builds: the CRDs apply and become
//! Established, every example is accepted and round-trips through the Rust types, bad objects
//! are refused with the field named, status written by the types (every condition the agent and
//! operator write) is stored, and deleting an application garbage-collects its States.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bpfman_k8s::conditions::{AppCondition, StateCondition};
use bpfman_k8s::names;
use bpfman_k8s::v1alpha1::*;
use bpfman_k8s_testenv::ControlPlane;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde::Deserialize;
use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

const CRDS: [&str; 5] = [
    "bpfapplications.bpfman.io",
    "bpfapplicationstates.bpfman.io",
    "clusterbpfapplications.bpfman.io",
    "clusterbpfapplicationstates.bpfman.io",
    "configs.bpfman.io",
];

/// The shared control plane with the CRDs applied (server-side) and Established.
fn plane() -> &'static ControlPlane {
    bpfman_k8s_testenv::shared_with_crds()
}

fn kubectl_ok(p: &ControlPlane, args: &[&str], stdin: Option<&str>) -> String {
    p.kubectl_ok(args, stdin)
}

fn now() -> String {
    now_rfc3339()
}

#[tokio::test]
async fn crds_apply_server_side_and_become_established() {
    let p = plane();
    let client = p.admin().await.expect("admin client");
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    for name in CRDS {
        let crd = crds.get(name).await.expect("crd exists");
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        assert!(established, "{name} is Established");
    }
    // Applying again is a no-op, not a conflict.
    let dir = repo().join("deploy/kubernetes/crds");
    kubectl_ok(
        p,
        &["apply", "--server-side", "-f", &dir.display().to_string()],
        None,
    );
}

fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("read example");
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).expect("yaml"))
        .filter(|v| !v.is_null())
        .collect()
}

/// Reads `file` and `server` into the Rust type for `kind` and says whether their specs mean the same,
/// and whether what the type writes equals what the server stored.
fn same_meaning(kind: &str, file: &Value, server: &Value) -> (bool, bool) {
    fn cmp<K: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug>(
        file: &Value,
        server: &Value,
    ) -> (bool, bool) {
        let a: K = serde_json::from_value(file.clone()).expect("file reads into the type");
        let b: K =
            serde_json::from_value(server.clone()).expect("stored object reads into the type");
        // The spec, through the types (metadata differs: the server adds uid, managedFields...).
        let written = serde_json::to_value(&a).expect("serialize");
        let read_back = serde_json::to_value(&b).expect("serialize");
        (
            written["spec"] == read_back["spec"],
            written["spec"] == server["spec"],
        )
    }
    match kind {
        "ClusterBpfApplication" => cmp::<ClusterBpfApplication>(file, server),
        "BpfApplication" => cmp::<BpfApplication>(file, server),
        "Config" => cmp::<Config>(file, server),
        other => panic!("no Rust type for {other}"),
    }
}

#[tokio::test]
async fn every_example_is_accepted_and_round_trips_through_the_types() {
    let p = plane();
    let dir = repo().join("examples/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("examples/kubernetes")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 6, "examples: {files:?}");
    let mut kinds_seen = std::collections::BTreeSet::new();
    let mut types_seen = std::collections::BTreeSet::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read");
        let path = file.display().to_string();
        let integer_lists = text.contains("GLOBAL_u8: [");
        if integer_lists {
            // Server-side apply refuses integer lists against `format: byte` (as for upstream's
            // CRDs); create stores them as written, which is how they exist in clusters.
            let out = p
                .kubectl(&["apply", "--server-side", "-f", &path])
                .expect("kubectl");
            assert!(
                !out.status.success(),
                "server-side apply refuses integer-list globalData"
            );
            kubectl_ok(p, &["create", "-f", &path], None);
        } else {
            kubectl_ok(p, &["apply", "--server-side", "-f", &path], None);
        }
        for doc in yaml_docs(file) {
            let kind = doc["kind"].as_str().expect("kind").to_string();
            if kind == "Namespace" {
                continue;
            }
            let name = doc["metadata"]["name"].as_str().expect("name");
            let mut args = vec!["get", kind.as_str(), name, "-o", "json"];
            let ns = doc["metadata"]["namespace"].as_str().map(str::to_string);
            if let Some(ns) = &ns {
                args.extend(["-n", ns.as_str()]);
            }
            let stored: Value = serde_json::from_str(&kubectl_ok(p, &args, None)).expect("json");
            let (typed_equal, written_equal) = same_meaning(&kind, &doc, &stored);
            assert!(
                typed_equal,
                "{path}: {kind}/{name} means the same read from the file and from the server"
            );
            if integer_lists {
                assert!(
                    stored["spec"]["globalData"]["GLOBAL_u8"].is_array(),
                    "stored as a list"
                );
                assert!(!written_equal, "the types write base64, not lists");
            } else {
                assert!(
                    written_equal,
                    "{path}: {kind}/{name}: what the types write is what the server stored (defaults included)"
                );
            }
            kinds_seen.insert(kind.clone());
            for prog in stored["spec"]["programs"].as_array().into_iter().flatten() {
                types_seen.insert(prog["type"].as_str().unwrap_or("").to_string());
            }
        }
    }
    assert_eq!(
        kinds_seen.into_iter().collect::<Vec<_>>(),
        ["BpfApplication", "ClusterBpfApplication", "Config"]
    );
    for (_, t, _) in ProgramType::ALL {
        assert!(types_seen.contains(t), "an example uses {t}");
    }
}

fn base_cluster_app(name: &str) -> Value {
    json!({
        "apiVersion": "bpfman.io/v1alpha1",
        "kind": "ClusterBpfApplication",
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {},
            "byteCode": {"image": {"url": "quay.io/bpfman-bytecode/xdp_pass:latest"}},
            "programs": [{
                "name": "pass",
                "type": "XDP",
                "xdp": {"links": [{"interfaceSelector": {"interfaces": ["eth0"]}}]}
            }]
        }
    })
}

#[tokio::test]
async fn bad_objects_are_refused_naming_the_field() {
    let p = plane();
    kubectl_ok(p, &["create", "namespace", "negative"], None);
    type Edit = fn(&mut Value);
    let cases: Vec<(&str, Edit, &[&str])> = vec![
        (
            "member does not match type",
            |v| {
                v["spec"]["programs"][0]["type"] = "TC".into();
            },
            &[
                "spec.programs[0]",
                "tc configuration is required when type is TC",
            ],
        ),
        (
            "priority above 1000",
            |v| {
                v["spec"]["programs"][0]["xdp"]["links"][0]["priority"] = 1001.into();
            },
            &["spec.programs[0].xdp.links[0].priority", "1000"],
        ),
        (
            "priority below 0",
            |v| {
                v["spec"]["programs"][0]["xdp"]["links"][0]["priority"] = (-1).into();
            },
            &["spec.programs[0].xdp.links[0].priority"],
        ),
        (
            "unknown direction",
            |v| {
                v["spec"]["programs"][0] = json!({"name": "tc_prog", "type": "TC", "tc": {"links": [
                {"interfaceSelector": {"interfaces": ["eth0"]}, "direction": "Sideways"}]}});
            },
            &[
                "spec.programs[0].tc.links[0].direction",
                "Unsupported value",
            ],
        ),
        (
            "unknown proceedOn",
            |v| {
                v["spec"]["programs"][0]["xdp"]["links"][0]["proceedOn"] =
                    json!(["Pass", "Bounce"]);
            },
            &[
                "spec.programs[0].xdp.links[0].proceedOn[1]",
                "Unsupported value",
            ],
        ),
        (
            "unknown pull policy",
            |v| {
                v["spec"]["byteCode"]["image"]["imagePullPolicy"] = "Sometimes".into();
            },
            &["spec.byteCode.image.imagePullPolicy", "Unsupported value"],
        ),
        (
            "both path and image",
            |v| {
                v["spec"]["byteCode"]["path"] = "/var/lib/bpfman/x.o".into();
            },
            &["spec.byteCode", "at most 1"],
        ),
        (
            "no byteCode",
            |v| {
                v["spec"].as_object_mut().map(|s| s.remove("byteCode"));
            },
            &["spec.byteCode", "Required"],
        ),
        (
            "program without a name",
            |v| {
                v["spec"]["programs"][0]
                    .as_object_mut()
                    .map(|s| s.remove("name"));
            },
            &["spec.programs[0].name", "Required"],
        ),
        (
            "field the type does not have",
            |v| {
                v["spec"]["programs"][0] = json!({"name": "kret", "type": "KRetProbe", "kretprobe": {"links": [
                {"function": "try_to_wake_up", "offset": 4}]}});
            },
            &[
                "spec.programs[0].kretprobe.links[0].offset",
                "not declared in schema",
            ],
        ),
        (
            "two interface selector forms",
            |v| {
                v["spec"]["programs"][0]["xdp"]["links"][0]["interfaceSelector"]["primaryNodeInterface"] =
                    true.into();
            },
            &[
                "spec.programs[0].xdp.links[0].interfaceSelector",
                "at most 1",
            ],
        ),
        (
            "no programs",
            |v| {
                v["spec"]["programs"] = json!([]);
            },
            &["spec.programs", "at least 1"],
        ),
        (
            "cluster-only member in a namespaced application",
            |v| {
                v["kind"] = "BpfApplication".into();
                v["metadata"]["namespace"] = "negative".into();
                v["spec"]["programs"][0] = json!({"name": "kp", "type": "KProbe", "kprobe": {"links": [{"function": "try_to_wake_up"}]}});
            },
            &["spec.programs[0].kprobe", "not declared in schema"],
        ),
        (
            "cluster-only type in a namespaced application",
            |v| {
                v["kind"] = "BpfApplication".into();
                v["metadata"]["namespace"] = "negative".into();
                v["spec"]["programs"][0]["type"] = "KProbe".into();
                v["spec"]["programs"][0]["xdp"]["links"][0]["networkNamespaces"] =
                    json!({"pods": {}});
            },
            &["spec.programs[0].type", "Unsupported value", "KProbe"],
        ),
        (
            "namespaced XDP link outside any pod",
            |v| {
                v["kind"] = "BpfApplication".into();
                v["metadata"]["namespace"] = "negative".into();
            },
            &[
                "spec.programs[0].xdp.links[0].networkNamespaces",
                "Required",
            ],
        ),
    ];
    let mut failures = Vec::new();
    for (what, edit, expect) in &cases {
        let mut obj = base_cluster_app("negative-case");
        edit(&mut obj);
        let out = p
            .kubectl_with(
                &p.admin_kubeconfig(),
                &["apply", "--server-side", "--dry-run=server", "-f", "-"],
                Some(&obj.to_string()),
            )
            .expect("kubectl");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() {
            failures.push(format!("{what}: accepted"));
        } else if let Some(missing) = expect.iter().find(|e| !err.contains(*e)) {
            failures.push(format!(
                "{what}: refused, but the message lacks {missing:?}: {err}"
            ));
        } else {
            println!("refused as expected ({what}): {}", err.trim());
        }
    }
    // And the unedited object is accepted, so the refusals are the edits'.
    let ok = base_cluster_app("negative-control");
    kubectl_ok(
        p,
        &["apply", "--server-side", "--dry-run=server", "-f", "-"],
        Some(&ok.to_string()),
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn owner_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.name_any(),
        uid: owner.meta().uid.clone().expect("uid"),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

async fn create_app(client: kube::Client, name: &str) -> ClusterBpfApplication {
    let apps: Api<ClusterBpfApplication> = Api::all(client);
    let app: ClusterBpfApplication = serde_json::from_value(base_cluster_app(name)).expect("app");
    apps.create(&PostParams::default(), &app)
        .await
        .expect("create app")
}

fn state_for(app: &ClusterBpfApplication, node: &str) -> ClusterBpfApplicationState {
    let mut s = ClusterBpfApplicationState::new(
        &format!("{}-{}", app.name_any(), "5f0e2a91"),
        Default::default(),
    );
    s.metadata.labels = Some(
        [
            (names::LABEL_OWNED_BY_PROGRAM.to_string(), app.name_any()),
            (names::LABEL_HOSTNAME.to_string(), node.to_string()),
        ]
        .into(),
    );
    s.metadata.owner_references = Some(vec![owner_ref(app)]);
    s
}

fn state_status(node: &str, count: i64, cond: StateCondition) -> ClusterBpfApplicationStateStatus {
    ClusterBpfApplicationStateStatus {
        update_count: count,
        node: node.to_string(),
        app_load_status: AppLoadStatus::LoadSuccess,
        programs: vec![ClusterProgramState {
            name: "pass".into(),
            type_: ProgramType::Xdp,
            program_id: Some(2_000_000_001),
            program_link_status: ProgramLinkStatus::Success,
            xdp: Some(LinksState {
                links: vec![XdpLinkState {
                    common: LinkStateCommon {
                        should_attach: true,
                        uuid: "1e24df86-f3ff-4e0a-8f20-6759272ddb08".into(),
                        link_id: Some(2_143_141_192),
                        link_status: LinkStatus::Attached,
                    },
                    interface_name: "eth0".into(),
                    netns_path: Some("/host/proc/2196/ns/net".into()),
                    priority: DEFAULT_PRIORITY,
                    proceed_on: vec![XdpProceedOn::Pass, XdpProceedOn::DispatcherReturn],
                }],
            }),
            tc: None,
            tcx: None,
            fentry: None,
            fexit: None,
            kprobe: None,
            kretprobe: None,
            uprobe: None,
            uretprobe: None,
            tracepoint: None,
        }],
        conditions: vec![cond.condition(None, &now(), None)],
    }
}

#[tokio::test]
async fn status_written_by_the_types_with_server_side_apply_is_stored() {
    let p = plane();
    let client = p.admin().await.expect("client");
    let app = create_app(client.clone(), "status-app").await;
    let states: Api<ClusterBpfApplicationState> = Api::all(client.clone());
    let state = states
        .create(&PostParams::default(), &state_for(&app, "node-a"))
        .await
        .expect("create state");
    let pp = PatchParams::apply("bpfman-agent").force();
    for (i, cond) in StateCondition::ALL.into_iter().enumerate() {
        let mut obj = ClusterBpfApplicationState::new(&state.name_any(), Default::default());
        obj.status = Some(state_status("node-a", i as i64 + 1, cond));
        let written = states
            .patch_status(&state.name_any(), &pp, &Patch::Apply(&obj))
            .await
            .unwrap_or_else(|e| panic!("status with condition {cond:?} refused: {e}"));
        let st = written.status.expect("status stored");
        assert_eq!(st.update_count, i as i64 + 1);
        assert_eq!(st.conditions.len(), 1, "one condition");
        assert_eq!(st.conditions[0].type_, cond.type_());
        assert_eq!(st.conditions[0].reason, cond.reason());
        let link = &st.programs[0].xdp.as_ref().expect("xdp").links[0];
        assert_eq!(link.common.link_id, Some(2_143_141_192));
    }

    // `format: int32` is enforced on writes (measured on 1.37: server-side apply and merge
    // patches alike). Upstream's sample State holds link ids above 2^31 (its daemon's random
    // ids, written by an older API server); the types read those (u32), but nobody can write
    // them now. Kernel program ids and this daemon's link ids stay below 2^31.
    let mut big = ClusterBpfApplicationState::new(&state.name_any(), Default::default());
    let mut st = state_status("node-a", 50, StateCondition::Success);
    if let Some(x) = st.programs[0].xdp.as_mut() {
        x.links[0].common.link_id = Some(3_629_930_733);
    }
    big.status = Some(st.clone());
    let err = states
        .patch_status(&state.name_any(), &pp, &Patch::Apply(&big))
        .await
        .expect_err("SSA enforces int32");
    assert!(err.to_string().contains("int32"), "{err}");
    let err = states
        .patch_status(
            &state.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": st})),
        )
        .await
        .expect_err("a merge patch is held to int32 too");
    assert!(err.to_string().contains("int32"), "{err}");

    // Upstream's reason with a space is refused: the reason we write instead is needed.
    let mut bad = ClusterBpfApplicationState::new(&state.name_any(), Default::default());
    let mut st = state_status("node-a", 99, StateCondition::UnloadError);
    st.conditions[0].reason = "Unload Error".into();
    bad.status = Some(st);
    let err = states
        .patch_status(&state.name_any(), &pp, &Patch::Apply(&bad))
        .await
        .expect_err("upstream's \"Unload Error\" reason is refused");
    assert!(err.to_string().contains("reason"), "{err}");

    // The operator's conditions on the application.
    let apps: Api<ClusterBpfApplication> = Api::all(client.clone());
    for cond in AppCondition::ALL {
        let patch = json!({
            "apiVersion": "bpfman.io/v1alpha1",
            "kind": "ClusterBpfApplication",
            "status": BpfApplicationStatus {
                conditions: vec![cond.condition(Some("node-a: Success"), &now(), app.metadata.generation)],
            },
        });
        let written = apps
            .patch_status(
                &app.name_any(),
                &PatchParams::apply("bpfman-operator").force(),
                &Patch::Apply(&patch),
            )
            .await
            .unwrap_or_else(|e| panic!("application condition {cond:?} refused: {e}"));
        let c = &written.status.expect("status").conditions[0];
        assert_eq!(
            (c.type_.as_str(), c.reason.as_str()),
            (cond.type_(), cond.type_())
        );
        assert_eq!(c.observed_generation, app.metadata.generation);
    }

    // A namespaced State as upstream writes it, status included.
    kubectl_ok(p, &["create", "namespace", "acme-states"], None);
    let fixture = include_str!("fixtures/upstream-states.yaml");
    let mut doc: Value = serde_yaml::Deserializer::from_str(fixture)
        .nth(1)
        .map(|d| Value::deserialize(d).expect("yaml"))
        .expect("second fixture");
    doc["metadata"]["namespace"] = "acme-states".into();
    doc["metadata"]
        .as_object_mut()
        .map(|m| m.remove("ownerReferences"));
    doc["metadata"]
        .as_object_mut()
        .map(|m| m.remove("finalizers"));
    let typed: BpfApplicationState = serde_json::from_value(doc).expect("typed");
    let ns_states: Api<BpfApplicationState> = Api::namespaced(client.clone(), "acme-states");
    ns_states
        .create(&PostParams::default(), &typed)
        .await
        .expect("create ns state");
    let written = ns_states
        .patch_status(&typed.name_any(), &pp, &Patch::Apply(&typed))
        .await
        .expect("namespaced status stored");
    assert_eq!(written.status, typed.status, "stored as written");
}

#[tokio::test]
async fn deleting_an_application_garbage_collects_its_states() {
    let p = plane();
    let client = p.admin().await.expect("client");
    let app = create_app(client.clone(), "gc-app").await;
    let states: Api<ClusterBpfApplicationState> = Api::all(client.clone());
    let state = states
        .create(&PostParams::default(), &state_for(&app, "node-gc"))
        .await
        .expect("create state");
    let apps: Api<ClusterBpfApplication> = Api::all(client.clone());
    apps.delete(&app.name_any(), &DeleteParams::default())
        .await
        .expect("delete app");
    let start = Instant::now();
    // The garbage collector discovers new CRDs on a resync of about 30 s.
    let deadline = start + Duration::from_secs(150);
    loop {
        match states.get_opt(&state.name_any()).await.expect("get") {
            None => break,
            Some(_) if Instant::now() > deadline => {
                panic!("the State outlived its owner by 150 s: garbage collection did not run")
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    println!(
        "State garbage-collected {:.1} s after its application was deleted",
        start.elapsed().as_secs_f64()
    );
}

#[tokio::test]
async fn identities_are_real_rbac_subjects() {
    let p = plane();
    // A user with no bindings is forbidden; a service account gets exactly what it is bound to.
    let nobody = p.user("nobody", &["tenants"]).await.expect("user client");
    let apps: Api<ClusterBpfApplication> = Api::all(nobody);
    let err = apps.list(&Default::default()).await.expect_err("forbidden");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403),
        "{err}"
    );

    let sa = p
        .service_account("rbac-test", "reader")
        .await
        .expect("service account client");
    let sa_apps: Api<ClusterBpfApplication> = Api::all(sa.clone());
    assert!(
        sa_apps.list(&Default::default()).await.is_err(),
        "unbound service account is forbidden"
    );
    kubectl_ok(
        p,
        &[
            "create",
            "clusterrole",
            "bpfapp-reader",
            "--verb=list",
            "--resource=clusterbpfapplications.bpfman.io",
        ],
        None,
    );
    kubectl_ok(
        p,
        &[
            "create",
            "clusterrolebinding",
            "bpfapp-reader",
            "--clusterrole=bpfapp-reader",
            "--serviceaccount=rbac-test:reader",
        ],
        None,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match sa_apps.list(&Default::default()).await {
            Ok(_) => break,
            Err(e) if Instant::now() > deadline => {
                panic!("bound service account still refused: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let out = p
        .kubectl(&[
            "auth",
            "can-i",
            "delete",
            "clusterbpfapplications.bpfman.io",
            "--as=system:serviceaccount:rbac-test:reader",
        ])
        .expect("kubectl");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "no",
        "list only, not delete"
    );
}
