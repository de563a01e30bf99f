//! The client against a real API server (in process, TLS, embedded store).

use std::sync::Arc;

use serde_json::json;
use trellis_api::auth::TokenAuthenticator;
use trellis_api::{ApiConfig, ApiServer};
use trellis_client::{Client, ListParams, Patch, Resource};

async fn server(dir: &std::path::Path) -> Client {
    let store = Arc::new(
        trellis_store::EmbeddedStore::open(dir.join("store"))
            .await
            .unwrap(),
    );
    let api = ApiServer::new(
        store,
        ApiConfig::new(TokenAuthenticator::single("t0ken", "admin")),
    )
    .await
    .unwrap();
    let pki = trellis_api::pki::ensure(&dir.join("pki"), &[]).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(api.serve(listener, Some(pki.server_config), std::future::pending()));
    use base64::Engine as _;
    let ca = base64::engine::general_purpose::STANDARD.encode(&pki.ca_pem);
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://{addr}\n    certificate-authority-data: {ca}\nusers:\n- name: u\n  user:\n    token: t0ken\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n"
    );
    let path = dir.join("kubeconfig");
    std::fs::write(&path, kubeconfig).unwrap();
    Client::from_kubeconfig(&path).unwrap()
}

fn cm(name: &str, app: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"app": app}}, "data": {"k": name}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_errors_paging_and_watch() {
    let dir = tempfile::tempdir().unwrap();
    let c = server(dir.path()).await;
    let cms = Resource::new("", "v1", "configmaps", true);

    let created = c.create(&cms, "default", &cm("a", "web")).await.unwrap();
    assert!(created["metadata"]["uid"].is_string());
    let e = c
        .create(&cms, "default", &cm("a", "web"))
        .await
        .unwrap_err();
    assert!(e.is_conflict(), "{e}");
    assert!(c
        .get(&cms, "default", "nope")
        .await
        .unwrap_err()
        .is_not_found());

    let mut stale = c.get(&cms, "default", "a").await.unwrap();
    let mut fresh = stale.clone();
    fresh["data"]["k"] = json!("2");
    c.replace(&cms, "default", &fresh).await.unwrap();
    stale["data"]["k"] = json!("3");
    assert!(c
        .replace(&cms, "default", &stale)
        .await
        .unwrap_err()
        .is_conflict());

    let patched = c
        .patch(
            &cms,
            "default",
            "a",
            "",
            Patch::Merge,
            &json!({"metadata": {"labels": {"x": "y"}}}),
        )
        .await
        .unwrap();
    assert_eq!(patched["metadata"]["labels"]["x"], "y");

    for i in 0..5 {
        c.create(
            &cms,
            "default",
            &cm(&format!("b{i}"), if i % 2 == 0 { "web" } else { "db" }),
        )
        .await
        .unwrap();
    }
    let web = c
        .list(&cms, "default", &ListParams::default().labels("app=web"))
        .await
        .unwrap();
    let names: Vec<&str> = web
        .items()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["a", "b0", "b2", "b4"]);
    let page = c
        .list(&cms, "default", &ListParams::default().limit(2))
        .await
        .unwrap();
    assert_eq!(page.items().len(), 2);
    let rest = c
        .list(
            &cms,
            "default",
            &ListParams::default()
                .limit(10)
                .continue_from(page.continue_token().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(rest.items().len(), 4);

    // Many requests share the pool.
    let handles: Vec<_> = (0..20)
        .map(|_| {
            let c = c.clone();
            let cms = cms.clone();
            tokio::spawn(async move { c.get(&cms, "default", "a").await.unwrap() })
        })
        .collect();
    for h in handles {
        assert_eq!(h.await.unwrap()["metadata"]["name"], "a");
    }

    let rv = c
        .list(&cms, "default", &ListParams::default())
        .await
        .unwrap()
        .resource_version()
        .to_string();
    let mut w = c
        .watch(
            &cms,
            "default",
            &ListParams::default().labels("app=web"),
            &rv,
        )
        .await
        .unwrap();
    c.create(&cms, "default", &cm("late", "web")).await.unwrap();
    c.create(&cms, "default", &cm("other", "db")).await.unwrap();
    c.delete(&cms, "default", "a", None).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let ev = tokio::time::timeout(std::time::Duration::from_secs(10), w.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if ev.kind != "BOOKMARK" {
            seen.push((
                ev.kind,
                ev.object["metadata"]["name"].as_str().unwrap().to_string(),
            ));
        }
    }
    assert_eq!(
        seen,
        vec![
            ("ADDED".to_string(), "late".to_string()),
            ("DELETED".to_string(), "a".to_string())
        ]
    );
}

#[test]
fn bad_kubeconfigs_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("k");
    std::fs::write(
        &p,
        "apiVersion: v1\nkind: Config\ncurrent-context: missing\n",
    )
    .unwrap();
    let e = Client::from_kubeconfig(&p).unwrap_err();
    assert!(e.to_string().contains("current-context \"missing\""), "{e}");
    assert!(Client::from_kubeconfig(dir.path().join("none"))
        .unwrap_err()
        .to_string()
        .contains("cannot read kubeconfig"));
}
