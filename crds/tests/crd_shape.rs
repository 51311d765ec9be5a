//! The CRDs have the promised names, scope, printer columns and condition
//! list-map. (That the committed YAML equals what these types generate is
//! checked by `cargo xtask gen --check` and the xtask tests.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[test]
fn crds_have_the_promised_shape() {
    use kube::CustomResourceExt;
    let tb = tokenwarden_crds::TokenBudget::crd();
    assert_eq!(tb.spec.group, "tokenwarden.dev");
    assert_eq!(tb.spec.scope, "Namespaced");
    assert_eq!(
        tb.spec.names.short_names.as_deref(),
        Some(&["tb".to_string(), "tbudget".to_string()][..])
    );
    let v = &tb.spec.versions[0];
    assert_eq!(v.name, "v1alpha1");
    assert!(v.subresources.as_ref().unwrap().status.is_some());
    let cols: Vec<_> = v
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    for want in [
        "Period",
        "Limit",
        "Spent",
        "Remaining",
        "State",
        "Ready",
        "Age",
    ] {
        assert!(
            cols.contains(&want),
            "TokenBudget lacks printer column {want}: {cols:?}"
        );
    }
    // The forecast: `Projected` in the default view, `Exhaustion` with `-o wide`.
    let col = |name: &str| {
        v.additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("TokenBudget lacks printer column {name}"))
            .clone()
    };
    let projected = col("Projected");
    assert_eq!(
        (projected.json_path.as_str(), projected.priority),
        (".status.projectedSpendUsd", None)
    );
    let exhaustion = col("Exhaustion");
    assert_eq!(
        (exhaustion.json_path.as_str(), exhaustion.priority),
        (".status.projectedExhaustion", Some(1))
    );
    let rp = tokenwarden_crds::RoutingPolicy::crd();
    let cols: Vec<_> = rp.spec.versions[0]
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    for want in ["Routes", "Ready", "Age"] {
        assert!(
            cols.contains(&want),
            "RoutingPolicy lacks printer column {want}: {cols:?}"
        );
    }
    // Conditions are a list-map keyed by type.
    let json = serde_json::to_value(&tb).unwrap();
    let cond = &json["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
        ["conditions"];
    assert_eq!(cond["x-kubernetes-list-type"], "map", "{cond}");
    assert_eq!(
        cond["x-kubernetes-list-map-keys"],
        serde_json::json!(["type"])
    );
}
