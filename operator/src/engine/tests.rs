//! In-process tests of the engine's rules, against fakes of the object
//! source and the ledger store.

use super::*;

#[test]
fn workload_names_come_from_labels_or_the_pod_name() {
    let mut id = Identity {
        namespace: "shop".into(),
        pod_name: "checkout-7d9f8b6c5d-x2x4p".into(),
        pod_uid: "u".into(),
        labels: [("pod-template-hash".to_string(), "7d9f8b6c5d".to_string())].into(),
    };
    assert_eq!(workload_of(&id), "checkout");
    id.labels.insert("app".into(), "cart".into());
    assert_eq!(workload_of(&id), "cart");
    id.labels
        .insert("app.kubernetes.io/name".into(), "cart-api".into());
    assert_eq!(workload_of(&id), "cart-api");
}
