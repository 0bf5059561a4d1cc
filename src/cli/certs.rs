//! `minik certs`: a cluster PKI in a folder (kubeadm's file names) and an admin kubeconfig, to
//! run `minik apiserver` by hand until `minik up` does it for you.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::cluster::pki::{ADMIN_USER, Pki, ServingOptions};

#[derive(Args, Debug)]
pub struct CertsArgs {
    /// The folder to write the PKI into (created; refused if it already holds one).
    #[arg(long)]
    pub dir: PathBuf,
    /// The API server URL written into the kubeconfig.
    #[arg(long, default_value = "https://127.0.0.1:6443")]
    pub server: String,
    /// More names or addresses for the serving certificate (repeatable).
    #[arg(long = "san")]
    pub sans: Vec<String>,
}

pub fn run(a: CertsArgs) -> anyhow::Result<ExitCode> {
    let pki = Pki::create(
        &a.dir,
        &ServingOptions {
            service_ip: None,
            extra_sans: a.sans,
        },
    )?;
    let admin = pki.admin();
    let kubeconfig = a.dir.join("admin.conf");
    let text = pki.kubeconfig(&a.server, "minik", ADMIN_USER, &admin)?;
    std::fs::write(&kubeconfig, text)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", kubeconfig.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&kubeconfig, std::fs::Permissions::from_mode(0o600))?;
    }
    let d = pki.dir().display();
    println!(
        "wrote the PKI to {d} and an admin kubeconfig to {}",
        kubeconfig.display()
    );
    println!("run the API server with:");
    println!(
        "  minik apiserver --etcd-servers http://127.0.0.1:2379 --secure-port 6443 \\\n    --tls-cert-file {d}/apiserver.crt --tls-private-key-file {d}/apiserver.key --client-ca-file {d}/ca.crt \\\n    --service-account-key-file {d}/sa.pub --service-account-signing-key-file {d}/sa.key"
    );
    println!(
        "and kubectl with: KUBECONFIG={} kubectl get ns",
        kubeconfig.display()
    );
    Ok(ExitCode::SUCCESS)
}
