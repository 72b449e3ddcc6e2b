//! Temporary experiment (to be deleted): PATCH latency with and without TCP_NODELAY.
use std::time::Instant;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Patch, PatchParams};
use kube::client::ConfigExt;
use kube::{Api, Client, Config};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::ServiceBuilder;
use tower::BoxError;

async fn measure(client: Client, label: &str) {
    let api: Api<Namespace> = Api::all(client);
    let mut v = vec![];
    for i in 0..40 {
        let p = serde_json::json!({"metadata":{"labels":{"exp": format!("v{i}")}}});
        let t = Instant::now();
        api.patch("lat-test", &PatchParams::default(), &Patch::Merge(&p)).await.unwrap();
        v.push(t.elapsed().as_secs_f64()*1000.0);
    }
    v.sort_by(|a,b| a.partial_cmp(b).unwrap());
    println!("{label}: p50 {:.1}ms p90 {:.1}ms max {:.1}ms", v[20], v[36], v[39]);
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = Config::infer().await.unwrap();
    measure(Client::try_from(config.clone()).unwrap(), "kube default").await;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let https = config.rustls_https_connector_with_connector(http).unwrap();
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer().unwrap())
        .map_err(BoxError::from)
        .service(hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(https));
    measure(Client::new(service, config.default_namespace.clone()), "nodelay").await;
    measure(Client::try_from(config.clone()).unwrap(), "kube default again").await;
}
