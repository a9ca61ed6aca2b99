//! Owns label-selector matching as the API server defines it (`metav1.LabelSelector`):
//! `matchLabels` AND every `matchExpressions` requirement, with the API server's validity
//! rules (In/NotIn need values, Exists/DoesNotExist take none, known operators only), so a
//! selector the API server would refuse on a Deployment is reported instead of read loosely.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// A checked selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector {
    reqs: Vec<Req>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Req {
    Eq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Selector {
    /// Checks `sel`; the error names the requirement and what is wrong with it.
    pub fn new(sel: &LabelSelector) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            reqs.push(Req::Eq(k.clone(), v.clone()));
        }
        for (i, e) in sel.match_expressions.iter().flatten().enumerate() {
            let values = e.values.clone().unwrap_or_default();
            let what = || format!("matchExpressions[{i}] (key '{}', {})", e.key, e.operator);
            if e.key.is_empty() {
                return Err(format!("{}: the key is empty", what()));
            }
            let r = match e.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(format!(
                        "{}: {} needs at least one value",
                        what(),
                        e.operator
                    ));
                }
                "In" => Req::In(e.key.clone(), values),
                "NotIn" => Req::NotIn(e.key.clone(), values),
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(format!("{}: {} takes no values", what(), e.operator));
                }
                "Exists" => Req::Exists(e.key.clone()),
                "DoesNotExist" => Req::DoesNotExist(e.key.clone()),
                other => {
                    return Err(format!(
                        "{}: unknown operator '{other}': use In, NotIn, Exists or DoesNotExist",
                        what()
                    ));
                }
            };
            reqs.push(r);
        }
        Ok(Self { reqs })
    }

    /// Whether objects with `labels` are selected (an empty selector selects everything).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.reqs.iter().all(|r| match r {
            Req::Eq(k, v) => labels.get(k) == Some(v),
            Req::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Req::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Req::Exists(k) => labels.contains_key(k),
            Req::DoesNotExist(k) => !labels.contains_key(k),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: Option<&[&str]>) -> LabelSelector {
        LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: key.into(),
                operator: op.into(),
                values: values.map(|v| v.iter().map(|s| s.to_string()).collect()),
            }]),
        }
    }

    #[test]
    fn empty_selects_all_and_labels_must_all_match() {
        let all = Selector::new(&LabelSelector::default()).unwrap();
        assert!(all.matches(&labels(&[])));
        let s = Selector::new(&LabelSelector {
            match_labels: Some(labels(&[("a", "1"), ("b", "2")])),
            match_expressions: None,
        })
        .unwrap();
        assert!(s.matches(&labels(&[("a", "1"), ("b", "2"), ("c", "3")])));
        assert!(!s.matches(&labels(&[("a", "1")])));
        assert!(!s.matches(&labels(&[("a", "1"), ("b", "3")])));
    }

    #[test]
    fn expressions() {
        let s = Selector::new(&expr("zone", "In", Some(&["a", "b"]))).unwrap();
        assert!(s.matches(&labels(&[("zone", "b")])));
        assert!(!s.matches(&labels(&[("zone", "c")])));
        assert!(!s.matches(&labels(&[])));
        let s = Selector::new(&expr("zone", "NotIn", Some(&["a"]))).unwrap();
        assert!(s.matches(&labels(&[])));
        assert!(!s.matches(&labels(&[("zone", "a")])));
        let s = Selector::new(&expr("gpu", "Exists", None)).unwrap();
        assert!(s.matches(&labels(&[("gpu", "")])));
        let s = Selector::new(&expr("gpu", "DoesNotExist", Some(&[]))).unwrap();
        assert!(!s.matches(&labels(&[("gpu", "")])));
    }

    #[test]
    fn invalid_selectors_are_refused_with_the_reason() {
        for (sel, want) in [
            (expr("k", "In", None), "needs at least one value"),
            (expr("k", "NotIn", Some(&[])), "needs at least one value"),
            (expr("k", "Exists", Some(&["x"])), "takes no values"),
            (expr("k", "Gt", Some(&["1"])), "unknown operator 'Gt'"),
            (expr("", "Exists", None), "key is empty"),
        ] {
            let e = Selector::new(&sel).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
    }
}
