//! A cluster's PKI, as kubeadm lays it out: a CA, the API server's serving certificate, client
//! certificates per identity, the service-account signing key pair, and kubeconfigs.
//!
//! Everything is written into one folder under kubeadm's file names (`/etc/kubernetes/pki` on a
//! kubeadm node; `<state>/pki/` for minik):
//!
//! | file                          | what                                                        |
//! | ----------------------------- | ----------------------------------------------------------- |
//! | `ca.crt`, `ca.key`            | the cluster CA (CN `kubernetes`), 10 years                  |
//! | `apiserver.crt`, `.key`       | serving certificate, SANs below, 1 year                     |
//! | `admin.crt`, `.key`           | client CN `kubernetes-admin`, O `system:masters`, 1 year    |
//! | `<name>.crt`, `.key`          | any other client, from [`Pki::client`]                      |
//! | `sa.key`, `sa.pub`            | the service-account token signing key pair (PKCS#8 / SPKI)  |
//!
//! The serving certificate's SANs are kube-apiserver's: `localhost`, `127.0.0.1`, the
//! `kubernetes` service's cluster IP (10.96.0.1 by default), `kubernetes`,
//! `kubernetes.default`, `kubernetes.default.svc`, `kubernetes.default.svc.cluster.local`,
//! plus any extra ones given.
//!
//! Keys are ECDSA P-256 (kubeadm's `--encryption-algorithm=ECDSA-P256`; `ring`, which signs
//! here, cannot generate RSA keys), PEM-encoded PKCS#8, written with mode 0600; certificates are
//! 0644. The service-account key pair is ECDSA as well, so tokens are signed ES256, which
//! Kubernetes accepts.
//!
//! A PKI is made once with [`Pki::create`] and opened again with [`Pki::open`] to issue more
//! client certificates from the same CA (as `kubeadm kubeconfig user` does). [`kubeconfig`] /
//! [`write_kubeconfig`] turn a client certificate into a kubeconfig with the data embedded.
//!
//! Multiple groups: rcgen keeps one value per distinguished-name attribute type, so a
//! certificate carries at most two `O` values here (the second one is written under O's OID as
//! a custom attribute, which every X.509 reader sees as a second `O`). Kubernetes' own
//! identities have at most one.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The CA's common name (kubeadm's).
pub const CA_COMMON_NAME: &str = "kubernetes";
/// The serving certificate's common name (kubeadm's).
pub const APISERVER_COMMON_NAME: &str = "kube-apiserver";
/// The admin identity: user and group.
pub const ADMIN_USER: &str = "kubernetes-admin";
pub const MASTERS_GROUP: &str = "system:masters";
/// The `kubernetes` service's cluster IP: the first address of the default service range.
pub const KUBERNETES_SERVICE_IP: &str = "10.96.0.1";
/// DNS names of the `kubernetes` service, as kube-apiserver puts them in its certificate.
pub const KUBERNETES_SERVICE_NAMES: [&str; 4] = [
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];
/// How long the CA is valid (kubeadm: 10 years).
pub const CA_VALIDITY_YEARS: i32 = 10;
/// How long leaf certificates are valid (kubeadm: 1 year).
pub const LEAF_VALIDITY_YEARS: i32 = 1;

/// The OID of the `O` (organizationName) attribute.
const ORGANIZATION_OID: [u64; 4] = [2, 5, 4, 10];

/// A certificate and its key, as files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertPaths {
    fn in_dir(dir: &Path, name: &str) -> CertPaths {
        CertPaths {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        }
    }

    /// The certificate's PEM text.
    pub fn cert_pem(&self) -> anyhow::Result<String> {
        read(&self.cert)
    }

    /// The key's PEM text.
    pub fn key_pem(&self) -> anyhow::Result<String> {
        read(&self.key)
    }
}

/// What the API server's serving certificate covers besides the defaults (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct ServingOptions {
    /// The `kubernetes` service's cluster IP; [`KUBERNETES_SERVICE_IP`] when `None`.
    pub service_ip: Option<String>,
    /// More SANs (host names or IP addresses), e.g. the machine's name or a LAN address.
    pub extra_sans: Vec<String>,
}

/// A cluster PKI in a folder (see the module docs). Holds the CA key in memory to sign more
/// client certificates.
pub struct Pki {
    dir: PathBuf,
    ca: Issuer<'static, KeyPair>,
}

/// The etcd CA's common name (kubeadm's: etcd has a CA of its own, under `pki/etcd/`).
pub const ETCD_CA_COMMON_NAME: &str = "etcd-ca";

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").field("dir", &self.dir).finish()
    }
}

impl Pki {
    /// Generates a new PKI into `dir` (created if missing): the CA, the API server's serving
    /// certificate, the admin client certificate and the service-account key pair. Refuses to
    /// overwrite an existing `ca.key`, so a cluster's CA is never replaced by accident.
    pub fn create(dir: &Path, serving: &ServingOptions) -> anyhow::Result<Pki> {
        let pki = Pki::create_ca(dir, CA_COMMON_NAME)?;

        let mut sans = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        sans.push(
            serving
                .service_ip
                .clone()
                .unwrap_or_else(|| KUBERNETES_SERVICE_IP.to_string()),
        );
        sans.extend(KUBERNETES_SERVICE_NAMES.iter().map(|s| s.to_string()));
        for s in &serving.extra_sans {
            if !sans.contains(s) {
                sans.push(s.clone());
            }
        }
        pki.serving("apiserver", APISERVER_COMMON_NAME, &sans)?;
        pki.client("admin", ADMIN_USER, &[MASTERS_GROUP])?;

        let sa = KeyPair::generate().context("generating the service-account key")?;
        write_file(&dir.join("sa.key"), &sa.serialize_pem(), 0o600)?;
        write_file(&dir.join("sa.pub"), &sa.public_key_pem(), 0o644)?;
        Ok(pki)
    }

    /// Generates only a CA (`ca.crt`/`ca.key`, common name `cn`) into `dir`, e.g. etcd's own CA
    /// in `pki/etcd/`. Refuses to replace an existing CA key.
    pub fn create_ca(dir: &Path, cn: &str) -> anyhow::Result<Pki> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let ca_paths = CertPaths::in_dir(dir, "ca");
        if ca_paths.key.exists() {
            bail!(
                "{} already exists; open the PKI instead of creating it again (or remove the \
                 folder to start a new cluster)",
                ca_paths.key.display()
            );
        }
        let ca_key = KeyPair::generate().context("generating the CA key")?;
        let ca_cert = ca_params(cn)
            .self_signed(&ca_key)
            .context("self-signing the CA")?;
        write_file(&ca_paths.cert, &ca_cert.pem(), 0o644)?;
        write_file(&ca_paths.key, &ca_key.serialize_pem(), 0o600)?;
        Ok(Pki {
            dir: dir.to_path_buf(),
            ca: Issuer::new(ca_params(cn), ca_key),
        })
    }

    /// Opens a PKI made by [`Pki::create`], to issue more certificates from its CA.
    pub fn open(dir: &Path) -> anyhow::Result<Pki> {
        Pki::open_ca(dir, CA_COMMON_NAME)
    }

    /// Opens a CA made by [`Pki::create_ca`] with common name `cn`.
    pub fn open_ca(dir: &Path, cn: &str) -> anyhow::Result<Pki> {
        let key_path = CertPaths::in_dir(dir, "ca").key;
        let key = KeyPair::from_pem(&read(&key_path)?)
            .with_context(|| format!("{} is not a PEM private key", key_path.display()))?;
        Ok(Pki {
            dir: dir.to_path_buf(),
            ca: Issuer::new(ca_params(cn), key),
        })
    }

    /// Issues a serving certificate for `sans` (host names or IP addresses) as `<name>.crt` /
    /// `<name>.key`, e.g. etcd's `server` certificate.
    pub fn serving(&self, name: &str, cn: &str, sans: &[String]) -> anyhow::Result<CertPaths> {
        self.issue(name, cn, &[], sans, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// The certificate and key called `name` in this folder (whether or not they exist).
    pub fn paths(&self, name: &str) -> CertPaths {
        CertPaths::in_dir(&self.dir, name)
    }

    /// The folder holding the files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `ca.crt` / `ca.key`.
    pub fn ca(&self) -> CertPaths {
        CertPaths::in_dir(&self.dir, "ca")
    }

    /// `apiserver.crt` / `apiserver.key` (kube-apiserver's `--tls-cert-file` /
    /// `--tls-private-key-file`).
    pub fn apiserver(&self) -> CertPaths {
        CertPaths::in_dir(&self.dir, "apiserver")
    }

    /// `admin.crt` / `admin.key`.
    pub fn admin(&self) -> CertPaths {
        CertPaths::in_dir(&self.dir, "admin")
    }

    /// `sa.key` (the private key, kube-controller-manager's `--service-account-private-key-file`
    /// and kube-apiserver's `--service-account-signing-key-file`).
    pub fn sa_key(&self) -> PathBuf {
        self.dir.join("sa.key")
    }

    /// `sa.pub` (kube-apiserver's `--service-account-key-file`).
    pub fn sa_pub(&self) -> PathBuf {
        self.dir.join("sa.pub")
    }

    /// Issues a client certificate (CN = the user, O = the groups; at most two, see the module
    /// docs) as `<name>.crt` / `<name>.key`, replacing an older one of that name.
    pub fn client(&self, name: &str, cn: &str, orgs: &[&str]) -> anyhow::Result<CertPaths> {
        self.issue(name, cn, orgs, &[], ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(
        &self,
        name: &str,
        cn: &str,
        orgs: &[&str],
        sans: &[String],
        usage: ExtendedKeyUsagePurpose,
    ) -> anyhow::Result<CertPaths> {
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
            bail!("{name:?} is not usable as a file name");
        }
        let mut p = CertificateParams::new(sans.to_vec())
            .with_context(|| format!("subject alternative names {sans:?}"))?;
        p.distinguished_name.push(DnType::CommonName, cn);
        match orgs {
            [] => {}
            [o] => p.distinguished_name.push(DnType::OrganizationName, *o),
            [o1, o2] => {
                p.distinguished_name.push(DnType::OrganizationName, *o1);
                p.distinguished_name
                    .push(DnType::CustomDnType(ORGANIZATION_OID.to_vec()), *o2);
            }
            _ => bail!(
                "{cn}: at most two groups (O) per certificate are supported, got {}",
                orgs.len()
            ),
        }
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![usage];
        p.use_authority_key_identifier_extension = true;
        let (y, m, d) = today();
        p.not_before = rcgen::date_time_ymd(y, m, d);
        p.not_after = rcgen::date_time_ymd(y + LEAF_VALIDITY_YEARS, m, same_day(m, d));
        let key = KeyPair::generate().with_context(|| format!("generating the key of {name}"))?;
        let cert = p
            .signed_by(&key, &self.ca)
            .with_context(|| format!("signing the certificate of {name}"))?;
        let paths = CertPaths::in_dir(&self.dir, name);
        write_file(&paths.cert, &cert.pem(), 0o644)?;
        write_file(&paths.key, &key.serialize_pem(), 0o600)?;
        Ok(paths)
    }

    /// A kubeconfig for the client certificate `client` (see [`kubeconfig`]), trusting this
    /// PKI's CA.
    pub fn kubeconfig(
        &self,
        server: &str,
        cluster: &str,
        user: &str,
        client: &CertPaths,
    ) -> anyhow::Result<String> {
        kubeconfig(&KubeconfigSpec {
            cluster,
            server,
            ca_pem: &self.ca().cert_pem()?,
            user,
            client_cert_pem: &client.cert_pem()?,
            client_key_pem: &client.key_pem()?,
        })
    }
}

/// The CA's parameters; the same every time, so that [`Pki::open`] rebuilds the issuer (its
/// distinguished name and key usages) from the key alone.
fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let (y, m, d) = today();
    p.not_before = rcgen::date_time_ymd(y, m, d);
    p.not_after = rcgen::date_time_ymd(y + CA_VALIDITY_YEARS, m, same_day(m, d));
    p
}

/// The day of the month `d` years later: the same, but February 29 becomes the 28th.
fn same_day(m: u8, d: u8) -> u8 {
    if m == 2 && d == 29 { 28 } else { d }
}

/// Today's UTC date as (year, month, day).
fn today() -> (i32, u8, u8) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    civil_from_days(secs.div_euclid(86_400))
}

/// The (year, month, day) of a day number counted from 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y as i32, m as u8, d as u8)
}

/// What goes into a kubeconfig with embedded credentials.
#[derive(Debug, Clone, Copy)]
pub struct KubeconfigSpec<'a> {
    /// The cluster's (and context's) name, e.g. `minik`.
    pub cluster: &'a str,
    /// The API server URL, e.g. `https://127.0.0.1:6443`.
    pub server: &'a str,
    /// The CA certificate the server's certificate is checked against (PEM).
    pub ca_pem: &'a str,
    /// The user entry's name, e.g. `kubernetes-admin`.
    pub user: &'a str,
    pub client_cert_pem: &'a str,
    pub client_key_pem: &'a str,
}

/// A kubeconfig as YAML, in kubeadm's shape: one cluster (`certificate-authority-data`), one
/// user (`client-certificate-data`, `client-key-data`) and one context `<user>@<cluster>`,
/// which is current.
pub fn kubeconfig(spec: &KubeconfigSpec<'_>) -> anyhow::Result<String> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let context = format!("{}@{}", spec.user, spec.cluster);
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": spec.cluster,
            "cluster": {
                "certificate-authority-data": b64(spec.ca_pem),
                "server": spec.server,
            },
        }],
        "contexts": [{
            "name": context,
            "context": {"cluster": spec.cluster, "user": spec.user},
        }],
        "current-context": context,
        "preferences": {},
        "users": [{
            "name": spec.user,
            "user": {
                "client-certificate-data": b64(spec.client_cert_pem),
                "client-key-data": b64(spec.client_key_pem),
            },
        }],
    });
    serde_yaml::to_string(&config).context("serializing the kubeconfig")
}

/// Writes [`kubeconfig`] to `path` with mode 0600 (it holds a private key).
pub fn write_kubeconfig(path: &Path, spec: &KubeconfigSpec<'_>) -> anyhow::Result<()> {
    write_file(path, &kubeconfig(spec)?, 0o600)
}

fn read(path: &Path) -> anyhow::Result<String> {
    fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Writes `text` to `path` (replacing it) with permission bits `mode`, set at creation so a
/// key is never readable by others, not even for a moment.
fn write_file(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let ctx = || format!("writing {}", path.display());
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(ctx)?;
    // An existing file keeps its old mode through open(); set it explicitly.
    f.set_permissions(fs::Permissions::from_mode(mode))
        .with_context(ctx)?;
    f.write_all(text.as_bytes()).with_context(ctx)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn temp_dir(tag: &str) -> PathBuf {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        std::env::temp_dir().join(format!("minik-pki-{tag}-{}-{nanos}", std::process::id()))
    }

    fn subject(pem: &str) -> (Vec<String>, Vec<String>) {
        let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let (_, c) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        let s = c.subject();
        let cn = s
            .iter_common_name()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        let o = s
            .iter_organization()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        (cn, o)
    }
    use rustls::pki_types::pem::PemObject as _;

    #[test]
    fn creates_kubeadm_layout() {
        let dir = temp_dir("layout");
        let pki = Pki::create(&dir, &ServingOptions::default()).unwrap();
        for f in [
            "ca.crt",
            "ca.key",
            "apiserver.crt",
            "apiserver.key",
            "admin.crt",
            "admin.key",
            "sa.key",
            "sa.pub",
        ] {
            let mode = fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777;
            let want = if f.ends_with(".key") { 0o600 } else { 0o644 };
            assert_eq!(mode, want, "{f}");
        }
        assert!(read(&pki.sa_key()).unwrap().contains("BEGIN PRIVATE KEY"));
        assert!(read(&pki.sa_pub()).unwrap().contains("BEGIN PUBLIC KEY"));

        let (cn, o) = subject(&pki.admin().cert_pem().unwrap());
        assert_eq!(
            (cn, o),
            (vec![ADMIN_USER.into()], vec![MASTERS_GROUP.into()])
        );

        let der = rustls::pki_types::CertificateDer::from_pem_slice(
            pki.apiserver().cert_pem().unwrap().as_bytes(),
        )
        .unwrap();
        let (_, c) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        let sans = format!("{:?}", c.subject_alternative_name().unwrap().unwrap().value);
        for want in ["localhost", "kubernetes.default.svc.cluster.local"] {
            assert!(sans.contains(want), "{want} in {sans}");
        }
        assert!(sans.contains("[10, 96, 0, 1]"), "10.96.0.1 in {sans}");
        assert!(sans.contains("[127, 0, 0, 1]"), "127.0.0.1 in {sans}");

        // Not created twice; reopened to issue more.
        assert!(Pki::create(&dir, &ServingOptions::default()).is_err());
        let again = Pki::open(&dir).unwrap();
        let c = again
            .client("node", "system:node:n1", &["system:nodes", "extra"])
            .unwrap();
        let (cn, o) = subject(&c.cert_pem().unwrap());
        assert_eq!(cn, vec!["system:node:n1".to_string()]);
        assert_eq!(o, vec!["system:nodes".to_string(), "extra".to_string()]);
        assert!(again.client("x", "x", &["a", "b", "c"]).is_err());

        // The reopened CA really signed it: rustls accepts the chain.
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(
                rustls::pki_types::CertificateDer::from_pem_slice(
                    pki.ca().cert_pem().unwrap().as_bytes(),
                )
                .unwrap(),
            )
            .unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let leaf =
            rustls::pki_types::CertificateDer::from_pem_slice(c.cert_pem().unwrap().as_bytes())
                .unwrap();
        verifier
            .verify_client_cert(&leaf, &[], rustls::pki_types::UnixTime::now())
            .unwrap();

        let yaml = pki
            .kubeconfig("https://127.0.0.1:6443", "minik", ADMIN_USER, &pki.admin())
            .unwrap();
        let v: serde_json::Value = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(v["current-context"], "kubernetes-admin@minik");
        assert_eq!(
            v["clusters"][0]["cluster"]["server"],
            "https://127.0.0.1:6443"
        );
        let ca = base64::engine::general_purpose::STANDARD
            .decode(
                v["clusters"][0]["cluster"]["certificate-authority-data"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap();
        assert_eq!(String::from_utf8(ca).unwrap(), pki.ca().cert_pem().unwrap());
        let path = dir.join("admin.conf");
        write_kubeconfig(
            &path,
            &KubeconfigSpec {
                cluster: "minik",
                server: "https://127.0.0.1:6443",
                ca_pem: "ca",
                user: "u",
                client_cert_pem: "c",
                client_key_pem: "k",
            },
        )
        .unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }
}
