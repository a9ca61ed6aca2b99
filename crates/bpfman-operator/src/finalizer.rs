//! Owns adding and removing the operator's finalizers: JSON patches that test the list (or the
//! uid) they edit, so a concurrent change of the object's finalizers makes the patch fail
//! (and the reconcile retry) instead of overwriting someone else's finalizer.

use std::fmt::Debug;

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;

/// Adds `f` to `obj`'s finalizers (nothing when it is there).
pub async fn add<K>(api: &Api<K>, obj: &K, f: &str) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let fins = obj.finalizers().to_vec();
    if fins.iter().any(|x| x == f) {
        return Ok(());
    }
    let patch = if obj.meta().finalizers.is_none() {
        json!([
            {"op": "test", "path": "/metadata/uid", "value": obj.uid()},
            {"op": "add", "path": "/metadata/finalizers", "value": [f]},
        ])
    } else {
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": fins},
            {"op": "add", "path": "/metadata/finalizers/-", "value": f},
        ])
    };
    send(api, &obj.name_any(), patch).await
}

/// Removes `f` from `obj`'s finalizers (nothing when it is not there).
pub async fn remove<K>(api: &Api<K>, obj: &K, f: &str) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let Some(i) = obj.finalizers().iter().position(|x| x == f) else {
        return Ok(());
    };
    let patch = json!([
        {"op": "test", "path": format!("/metadata/finalizers/{i}"), "value": f},
        {"op": "remove", "path": format!("/metadata/finalizers/{i}")},
    ]);
    send(api, &obj.name_any(), patch).await
}

async fn send<K>(api: &Api<K>, name: &str, patch: serde_json::Value) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let p = serde_json::from_value(patch).map_err(kube::Error::SerdeError)?;
    api.patch(name, &PatchParams::default(), &Patch::<()>::Json(p))
        .await
        .map(|_| ())
}
