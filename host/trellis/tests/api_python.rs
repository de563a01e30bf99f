//! The official Kubernetes Python client (`pip install kubernetes`, installed
//! by dev/setup) against both stores.

mod common;

use common::Cluster;

fn python_client_works(c: Cluster) {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/client_check.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(c.kubeconfig())
        .output()
        .expect("python3 runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if text.contains("No module named 'kubernetes'") {
        panic!("the Python client is missing: run dev/setup (pip install kubernetes)");
    }
    assert!(
        out.status.success(),
        "python client checks failed:\n{text}\nserver output:\n{}",
        c.output()
    );
    assert!(text.contains("all checks passed"), "{text}");
}

common::on_both_stores!(python_client_works);
