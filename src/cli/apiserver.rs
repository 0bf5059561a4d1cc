//! `minik apiserver`: the Kubernetes API server process, with kube-apiserver's flag names.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::apiserver::server::{self, ApiServerConfig};
use crate::apiserver::storage::EtcdConfig;

#[derive(Args, Debug)]
pub struct ApiServerArgs {
    /// etcd servers to connect to (comma-separated URLs).
    #[arg(long, value_delimiter = ',', required = true)]
    pub etcd_servers: Vec<String>,
    /// CA bundle the etcd servers' certificates are checked against.
    #[arg(long)]
    pub etcd_cafile: Option<PathBuf>,
    /// Client certificate for etcd.
    #[arg(long, requires = "etcd_keyfile")]
    pub etcd_certfile: Option<PathBuf>,
    /// Client key for etcd.
    #[arg(long, requires = "etcd_certfile")]
    pub etcd_keyfile: Option<PathBuf>,
    /// The port to serve HTTPS on.
    #[arg(long, default_value_t = 6443)]
    pub secure_port: u16,
    /// The IP address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind_address: String,
    /// The serving certificate (PEM).
    #[arg(long)]
    pub tls_cert_file: PathBuf,
    /// The serving certificate's private key (PEM).
    #[arg(long)]
    pub tls_private_key_file: PathBuf,
    /// Client certificates signed by this CA are authenticated (CN = user, O = groups).
    #[arg(long)]
    pub client_ca_file: PathBuf,
    /// The range Services' cluster IPs are allocated from.
    #[arg(long, default_value = "10.96.0.0/12")]
    pub service_cluster_ip_range: String,
    /// The range of NodePort Services' node ports.
    #[arg(long, default_value = "30000-32767")]
    pub service_node_port_range: String,
    /// PEM keys (public or private) that verify service-account tokens; repeatable.
    #[arg(long)]
    pub service_account_key_file: Vec<PathBuf>,
    /// PEM private key that signs service-account tokens.
    #[arg(long)]
    pub service_account_signing_key_file: Option<PathBuf>,
    /// Issuer written into service-account tokens (the first) and accepted; repeatable.
    #[arg(long)]
    pub service_account_issuer: Vec<String>,
    /// Client certificate for connections to kubelets (logs, exec, attach, port-forward).
    #[arg(long, requires_all = ["kubelet_client_key", "kubelet_certificate_authority"])]
    pub kubelet_client_certificate: Option<PathBuf>,
    /// Key of --kubelet-client-certificate.
    #[arg(long, requires = "kubelet_client_certificate")]
    pub kubelet_client_key: Option<PathBuf>,
    /// CA bundle kubelets' serving certificates are checked against.
    #[arg(long, requires = "kubelet_client_certificate")]
    pub kubelet_certificate_authority: Option<PathBuf>,
}

pub fn run(a: ApiServerArgs) -> anyhow::Result<ExitCode> {
    let cfg = ApiServerConfig {
        etcd: EtcdConfig {
            servers: a.etcd_servers,
            ca_file: a.etcd_cafile,
            cert_file: a.etcd_certfile,
            key_file: a.etcd_keyfile,
        },
        bind_address: a.bind_address,
        secure_port: a.secure_port,
        tls_cert_file: a.tls_cert_file,
        tls_private_key_file: a.tls_private_key_file,
        client_ca_file: a.client_ca_file,
        service_cluster_ip_range: a.service_cluster_ip_range,
        service_node_port_range: a.service_node_port_range,
        service_account_key_files: a.service_account_key_file,
        service_account_signing_key_file: a.service_account_signing_key_file,
        service_account_issuers: a.service_account_issuer,
        kubelet_client: match (
            a.kubelet_client_certificate,
            a.kubelet_client_key,
            a.kubelet_certificate_authority,
        ) {
            (Some(certificate), Some(key), Some(certificate_authority)) => {
                Some(server::KubeletClientFiles {
                    certificate,
                    key,
                    certificate_authority,
                })
            }
            _ => None,
        },
    };
    super::runtime()?.block_on(server::serve(cfg, super::shutdown_signal()))?;
    Ok(ExitCode::SUCCESS)
}
