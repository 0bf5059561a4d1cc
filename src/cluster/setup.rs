//! Everything a new profile needs on disk before its first process starts: the PKI (kubeadm's
//! file names), a kubeconfig per identity, and the static-pod manifests.

use anyhow::Context;

use super::config::ClusterConfig;
use super::manifests;
use super::pki::{
    ADMIN_USER, CertPaths, ETCD_CA_COMMON_NAME, KubeconfigSpec, MASTERS_GROUP, Pki, ServingOptions,
    write_kubeconfig,
};
use super::profile::Profile;

/// The identities kubeadm issues, as (kubeconfig file, user, groups).
pub const COMPONENT_IDENTITIES: [(&str, &str, &[&str]); 2] = [
    ("scheduler", "system:kube-scheduler", &[]),
    ("controller-manager", "system:kube-controller-manager", &[]),
];

/// The API server's URL for a config.
pub fn server_url(cfg: &ClusterConfig) -> String {
    format!("https://127.0.0.1:{}", cfg.ports.apiserver)
}

/// Generates the PKI: the cluster CA with the API server's serving certificate, the admin and
/// component client certificates, the service-account key pair, and etcd's own CA with its
/// server certificate and the clients of the store (`apiserver-etcd-client`,
/// `etcd/healthcheck-client`, which `minik etcd backup` and `minik etcdctl` use).
pub fn create_pki(profile: &Profile, cfg: &ClusterConfig) -> anyhow::Result<()> {
    let pki = Pki::create(
        &profile.pki_dir(),
        &ServingOptions {
            service_ip: Some(cfg.kubernetes_service_ip()),
            extra_sans: vec![profile.node_name()],
        },
    )?;
    pki.client(
        "apiserver-kubelet-client",
        "kube-apiserver-kubelet-client",
        &[MASTERS_GROUP],
    )?;
    for (name, user, groups) in COMPONENT_IDENTITIES {
        pki.client(name, user, groups)?;
    }
    let etcd = Pki::create_ca(&profile.etcd_pki_dir(), ETCD_CA_COMMON_NAME)?;
    etcd.serving(
        "server",
        &profile.node_name(),
        &[
            "localhost".into(),
            "127.0.0.1".into(),
            "::1".into(),
            profile.node_name(),
        ],
    )?;
    etcd.client("healthcheck-client", "kube-etcd-healthcheck-client", &[])?;
    // kubeadm keeps the API server's etcd client next to its other files, signed by etcd's CA.
    let c = etcd.client("apiserver-etcd-client", "kube-apiserver-etcd-client", &[])?;
    let dest = pki.paths("apiserver-etcd-client");
    std::fs::rename(&c.cert, &dest.cert).context("moving apiserver-etcd-client.crt")?;
    std::fs::rename(&c.key, &dest.key).context("moving apiserver-etcd-client.key")?;
    Ok(())
}

/// The client certificate `minik etcd backup` / `minik etcdctl` talk to the store with.
pub fn etcd_client(profile: &Profile) -> (CertPaths, std::path::PathBuf) {
    let dir = profile.etcd_pki_dir();
    (
        CertPaths {
            cert: dir.join("healthcheck-client.crt"),
            key: dir.join("healthcheck-client.key"),
        },
        dir.join("ca.crt"),
    )
}

/// Writes the kubeconfigs (again, e.g. when the API server's port changed): `kubeconfig` (the
/// user's, named after the profile's context), `admin.conf`, `scheduler.conf`,
/// `controller-manager.conf`.
pub fn write_kubeconfigs(profile: &Profile, cfg: &ClusterConfig) -> anyhow::Result<()> {
    let pki = Pki::open(&profile.pki_dir())?;
    let server = server_url(cfg);
    let ca = pki.ca().cert_pem()?;
    let admin = pki.admin();
    let (cert, key) = (admin.cert_pem()?, admin.key_pem()?);
    let context = profile.context_name();
    write_kubeconfig(
        &profile.kubeconfig(),
        &KubeconfigSpec {
            cluster: &context,
            server: &server,
            ca_pem: &ca,
            user: &context,
            client_cert_pem: &cert,
            client_key_pem: &key,
        },
    )?;
    write_kubeconfig(
        &profile.conf("admin"),
        &KubeconfigSpec {
            cluster: &context,
            server: &server,
            ca_pem: &ca,
            user: ADMIN_USER,
            client_cert_pem: &cert,
            client_key_pem: &key,
        },
    )?;
    for (name, user, _) in COMPONENT_IDENTITIES {
        let c = pki.paths(name);
        write_kubeconfig(
            &profile.conf(name),
            &KubeconfigSpec {
                cluster: &context,
                server: &server,
                ca_pem: &ca,
                user,
                client_cert_pem: &c.cert_pem()?,
                client_key_pem: &c.key_pem()?,
            },
        )?;
    }
    Ok(())
}

/// Makes a new profile's files: config, PKI, kubeconfigs and manifests.
pub fn create(profile: &Profile, cfg: &ClusterConfig) -> anyhow::Result<()> {
    profile.create_dirs()?;
    if !profile.pki_dir().join("ca.key").exists() {
        create_pki(profile, cfg)?;
    }
    write_kubeconfigs(profile, cfg)?;
    manifests::write_all(profile, cfg)?;
    super::nodes::write_all(profile, cfg)?;
    save_config(profile, cfg)
}

/// Writes `config.yaml` (last, so a profile "exists" only once everything else is there).
pub fn save_config(profile: &Profile, cfg: &ClusterConfig) -> anyhow::Result<()> {
    let path = profile.config_file();
    std::fs::write(&path, cfg.to_yaml()?).with_context(|| format!("writing {}", path.display()))
}

/// Reads a profile's `config.yaml`.
pub fn load_config(profile: &Profile) -> anyhow::Result<ClusterConfig> {
    let path = profile.config_file();
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    ClusterConfig::parse(&text, &path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_profile_has_kubeadms_files() {
        let dir = tempfile::tempdir().unwrap();
        let profile = Profile {
            name: "lab".into(),
            dir: dir.path().join("lab"),
        };
        let cfg = ClusterConfig::default();
        create(&profile, &cfg).unwrap();
        for f in [
            "config.yaml",
            "kubeconfig",
            "admin.conf",
            "scheduler.conf",
            "controller-manager.conf",
            "pki/ca.crt",
            "pki/apiserver.crt",
            "pki/apiserver-etcd-client.crt",
            "pki/apiserver-etcd-client.key",
            "pki/apiserver-kubelet-client.crt",
            "pki/sa.key",
            "pki/etcd/ca.crt",
            "pki/etcd/server.crt",
            "pki/etcd/healthcheck-client.key",
            "manifests/etcd.yaml",
            "manifests/kube-apiserver.yaml",
        ] {
            assert!(profile.dir.join(f).is_file(), "{f}");
        }
        assert_eq!(load_config(&profile).unwrap(), cfg);
        // A second create keeps the CA.
        let ca = std::fs::read(profile.dir.join("pki/ca.crt")).unwrap();
        create(&profile, &cfg).unwrap();
        assert_eq!(std::fs::read(profile.dir.join("pki/ca.crt")).unwrap(), ca);
    }
}
