//! Service-account tokens: JWTs the API server signs for pods and checks on every request.
//!
//! A token is `base64url(header).base64url(claims).base64url(signature)`. The header names the
//! algorithm (`RS256` for RSA keys, `ES256`/`ES384` for ECDSA keys) and the key id `kid`, which is,
//! as in kube-apiserver, the unpadded base64url of the SHA-256 of the public key's DER
//! SubjectPublicKeyInfo. The claims are the real ones:
//!
//! ```json
//! {"aud":["https://kubernetes.default.svc.cluster.local"],"exp":1700003600,"iat":1700000000,
//!  "iss":"https://kubernetes.default.svc.cluster.local","jti":"…",
//!  "kubernetes.io":{"namespace":"lab","node":{"name":"n1","uid":"…"},"pod":{"name":"p","uid":"…"},
//!                   "serviceaccount":{"name":"robot","uid":"…"},"warnafter":1700003600},
//!  "nbf":1700000000,"sub":"system:serviceaccount:lab:robot"}
//! ```
//!
//! [`TokenIssuer`] signs (`--service-account-signing-key-file`, `--service-account-issuer`);
//! [`TokenAuthenticator`] verifies (`--service-account-key-file`, possibly several files with
//! several keys, public or private; every `--service-account-issuer`; `--api-audiences`, which
//! defaults to the issuers). Times are checked with go-jose's one-minute leeway, as the real
//! server does. Whether the service account, pod or node still exist (and have the uids in the
//! token) is for the caller to check with the store: [`Claims`] carries them.
//!
//! Keys are read from PEM: `PRIVATE KEY` (PKCS#8, RSA or ECDSA P-256/P-384), `RSA PRIVATE KEY`
//! (PKCS#1, what `openssl genrsa` writes), `EC PRIVATE KEY` (SEC 1, with its public key, what
//! `openssl ecparam -genkey` writes), `PUBLIC KEY` (SubjectPublicKeyInfo) and `RSA PUBLIC KEY`.
//! Crypto is ring's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{self, EcdsaKeyPair, KeyPair as _, RsaKeyPair, UnparsedPublicKey};
use serde_json::{Value, json};

use super::{ALL_AUTHENTICATED, User};

/// go-jose's default leeway for exp/nbf/iat, which kube-apiserver uses.
const LEEWAY_SECONDS: i64 = 60;

/// The extra keys kube-apiserver puts in a service account's user info.
pub const POD_NAME_KEY: &str = "authentication.kubernetes.io/pod-name";
pub const POD_UID_KEY: &str = "authentication.kubernetes.io/pod-uid";
pub const NODE_NAME_KEY: &str = "authentication.kubernetes.io/node-name";
pub const NODE_UID_KEY: &str = "authentication.kubernetes.io/node-uid";
pub const CREDENTIAL_ID_KEY: &str = "authentication.kubernetes.io/credential-id";

/// What can go wrong reading keys, signing or checking tokens.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The key material is unusable (not PEM, an unsupported key type, …).
    #[error("{0}")]
    Key(String),
    /// Signing failed or the request was invalid.
    #[error("{0}")]
    Sign(String),
    /// The token was not issued by any of our issuers (another authenticator may know it).
    #[error("token issuer {0:?} is not one of the accepted issuers")]
    UnknownIssuer(String),
    /// The token is malformed, forged, expired, or meant for someone else: a 401.
    #[error("{0}")]
    InvalidToken(String),
}

fn key_err(msg: impl Into<String>) -> AuthError {
    AuthError::Key(msg.into())
}

fn invalid(msg: impl Into<String>) -> AuthError {
    AuthError::InvalidToken(msg.into())
}

/// A name and uid (`kubernetes.io.pod`, `.serviceaccount`, `.node`, `.secret`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectRef {
    pub name: String,
    pub uid: String,
}

/// The claims of a verified token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    pub issuer: String,
    pub subject: String,
    pub audiences: Vec<String>,
    pub expires_at: i64,
    pub issued_at: Option<i64>,
    pub not_before: Option<i64>,
    pub jti: Option<String>,
    pub namespace: String,
    pub service_account: ObjectRef,
    pub pod: Option<ObjectRef>,
    pub secret: Option<ObjectRef>,
    pub node: Option<ObjectRef>,
    pub warn_after: Option<i64>,
}

impl Claims {
    /// The user these claims authenticate, as kube-apiserver builds it: the service account's
    /// user name and uid, its groups plus `system:authenticated`, and the pod, node and
    /// credential id as extra.
    pub fn user(&self) -> User {
        let ns = &self.namespace;
        let mut extra = BTreeMap::new();
        if let Some(pod) = &self.pod
            && !pod.name.is_empty()
            && !pod.uid.is_empty()
        {
            extra.insert(POD_NAME_KEY.to_string(), vec![pod.name.clone()]);
            extra.insert(POD_UID_KEY.to_string(), vec![pod.uid.clone()]);
        }
        if let Some(jti) = self.jti.as_deref().filter(|j| !j.is_empty()) {
            extra.insert(CREDENTIAL_ID_KEY.to_string(), vec![format!("JTI={jti}")]);
        }
        if let Some(node) = self.node.as_ref().filter(|n| !n.name.is_empty()) {
            extra.insert(NODE_NAME_KEY.to_string(), vec![node.name.clone()]);
            if !node.uid.is_empty() {
                extra.insert(NODE_UID_KEY.to_string(), vec![node.uid.clone()]);
            }
        }
        User {
            name: format!("system:serviceaccount:{ns}:{}", self.service_account.name),
            uid: self.service_account.uid.clone(),
            groups: vec![
                "system:serviceaccounts".to_string(),
                format!("system:serviceaccounts:{ns}"),
                ALL_AUTHENTICATED.to_string(),
            ],
            extra,
        }
    }
}

/// What to put in a new token.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokenRequest<'a> {
    pub namespace: &'a str,
    pub service_account: &'a str,
    pub service_account_uid: &'a str,
    /// Empty: the issuer (kube-apiserver's default `--api-audiences`).
    pub audiences: &'a [String],
    pub expiration_seconds: i64,
    /// (name, uid) of the pod the token is bound to.
    pub bound_pod: Option<(&'a str, &'a str)>,
    /// (name, uid) of the node that pod runs on (kube-apiserver adds it for pod-bound tokens).
    pub bound_node: Option<(&'a str, &'a str)>,
    /// `kubernetes.io.warnafter` (unix seconds), for tokens whose expiry was extended.
    pub warn_after: Option<i64>,
    /// Unix seconds.
    pub now: i64,
}

// ---------------------------------------------------------------------------------------------
// PEM and DER

/// The blocks of a PEM file: (label, DER bytes).
fn pem_blocks(text: &str) -> Result<Vec<(String, Vec<u8>)>, AuthError> {
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let line = line.trim();
        let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let mut b64 = String::new();
        let mut closed = false;
        for l in lines.by_ref() {
            let l = l.trim();
            if l == end {
                closed = true;
                break;
            }
            if l.contains(':') {
                // RFC 1421 headers (Proc-Type, DEK-Info) mean an encrypted key.
                return Err(key_err(format!(
                    "the {label} block is encrypted; decrypt it first"
                )));
            }
            b64.push_str(l);
        }
        if !closed {
            return Err(key_err(format!("the {label} block has no END line")));
        }
        let der = STANDARD
            .decode(b64.as_bytes())
            .map_err(|e| key_err(format!("the {label} block is not valid base64: {e}")))?;
        out.push((label.to_string(), der));
    }
    Ok(out)
}

/// A minimal DER reader: (tag, contents, rest).
fn der_read(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

fn der_expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, content, rest) = der_read(input)?;
    (t == tag).then_some((content, rest))
}

fn der_write(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .iter()
            .copied()
            .skip_while(|&b| b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(content);
    out
}

const SEQUENCE: u8 = 0x30;
const OID: u8 = 0x06;
const BIT_STRING: u8 = 0x03;
const OCTET_STRING: u8 = 0x04;
const INTEGER: u8 = 0x02;
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Curve {
    P256,
    P384,
}

impl Curve {
    fn oid(self) -> &'static [u8] {
        match self {
            Curve::P256 => OID_P256,
            Curve::P384 => OID_P384,
        }
    }
    fn from_oid(oid: &[u8]) -> Option<Curve> {
        match oid {
            o if o == OID_P256 => Some(Curve::P256),
            o if o == OID_P384 => Some(Curve::P384),
            _ => None,
        }
    }
    fn alg(self) -> &'static str {
        match self {
            Curve::P256 => "ES256",
            Curve::P384 => "ES384",
        }
    }
    fn signing(self) -> &'static signature::EcdsaSigningAlgorithm {
        match self {
            Curve::P256 => &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            Curve::P384 => &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
        }
    }
    fn verification(self) -> &'static signature::EcdsaVerificationAlgorithm {
        match self {
            Curve::P256 => &signature::ECDSA_P256_SHA256_FIXED,
            Curve::P384 => &signature::ECDSA_P384_SHA384_FIXED,
        }
    }
}

/// A public key: RSA (DER RSAPublicKey) or ECDSA (uncompressed point).
#[derive(Debug, Clone, PartialEq, Eq)]
enum PublicKey {
    Rsa(Vec<u8>),
    Ec(Curve, Vec<u8>),
}

impl PublicKey {
    /// DER SubjectPublicKeyInfo, as Go's `x509.MarshalPKIXPublicKey` writes it.
    fn spki(&self) -> Vec<u8> {
        let (alg_id, key) = match self {
            PublicKey::Rsa(der) => {
                let mut alg = der_write(OID, OID_RSA);
                alg.extend_from_slice(&[0x05, 0x00]);
                (der_write(SEQUENCE, &alg), der)
            }
            PublicKey::Ec(curve, point) => {
                let mut alg = der_write(OID, OID_EC);
                alg.extend(der_write(OID, curve.oid()));
                (der_write(SEQUENCE, &alg), point)
            }
        };
        let mut bits = vec![0u8];
        bits.extend_from_slice(key);
        let mut body = alg_id;
        body.extend(der_write(BIT_STRING, &bits));
        der_write(SEQUENCE, &body)
    }

    /// kube-apiserver's key id: unpadded base64url of SHA-256 of the DER SubjectPublicKeyInfo.
    fn key_id(&self) -> String {
        URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, &self.spki()))
    }

    fn from_spki(der: &[u8]) -> Result<PublicKey, AuthError> {
        let bad = || key_err("malformed PUBLIC KEY");
        let (spki, _) = der_expect(der, SEQUENCE).ok_or_else(bad)?;
        let (alg, rest) = der_expect(spki, SEQUENCE).ok_or_else(bad)?;
        let (bits, _) = der_expect(rest, BIT_STRING).ok_or_else(bad)?;
        let (&unused, key) = bits.split_first().ok_or_else(bad)?;
        if unused != 0 {
            return Err(bad());
        }
        let (oid, params) = der_expect(alg, OID).ok_or_else(bad)?;
        if oid == OID_RSA {
            return Ok(PublicKey::Rsa(key.to_vec()));
        }
        if oid == OID_EC {
            let (curve_oid, _) = der_expect(params, OID).ok_or_else(bad)?;
            let curve = Curve::from_oid(curve_oid)
                .ok_or_else(|| key_err("unsupported elliptic curve (P-256 and P-384 are)"))?;
            return Ok(PublicKey::Ec(curve, key.to_vec()));
        }
        Err(key_err(
            "unsupported public key algorithm (RSA and ECDSA are)",
        ))
    }
}

/// A private key that can sign.
enum SigningKey {
    Rsa(RsaKeyPair),
    Ec(Curve, EcdsaKeyPair),
}

impl SigningKey {
    fn public(&self) -> PublicKey {
        match self {
            SigningKey::Rsa(k) => PublicKey::Rsa(k.public().as_ref().to_vec()),
            SigningKey::Ec(c, k) => PublicKey::Ec(*c, k.public_key().as_ref().to_vec()),
        }
    }

    fn alg(&self) -> &'static str {
        match self {
            SigningKey::Rsa(_) => "RS256",
            SigningKey::Ec(c, _) => c.alg(),
        }
    }

    fn sign(&self, msg: &[u8], rng: &SystemRandom) -> Result<Vec<u8>, AuthError> {
        let fail = |_| AuthError::Sign("signing the token failed".to_string());
        match self {
            SigningKey::Rsa(k) => {
                let mut sig = vec![0u8; k.public().modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, rng, msg, &mut sig)
                    .map_err(fail)?;
                Ok(sig)
            }
            SigningKey::Ec(_, k) => Ok(k.sign(rng, msg).map_err(fail)?.as_ref().to_vec()),
        }
    }

    /// Reads a private key block, or `None` for a block that is not a private key.
    fn from_block(label: &str, der: &[u8]) -> Result<Option<SigningKey>, AuthError> {
        let rng = SystemRandom::new();
        match label {
            "RSA PRIVATE KEY" => RsaKeyPair::from_der(der)
                .map(|k| Some(SigningKey::Rsa(k)))
                .map_err(|e| key_err(format!("unusable RSA PRIVATE KEY: {e}"))),
            "PRIVATE KEY" => {
                if let Ok(k) = RsaKeyPair::from_pkcs8(der) {
                    return Ok(Some(SigningKey::Rsa(k)));
                }
                for curve in [Curve::P256, Curve::P384] {
                    if let Ok(k) = EcdsaKeyPair::from_pkcs8(curve.signing(), der, &rng) {
                        return Ok(Some(SigningKey::Ec(curve, k)));
                    }
                }
                Err(key_err(
                    "unusable PRIVATE KEY: not an RSA (2048-4096 bits) or ECDSA P-256/P-384 key",
                ))
            }
            "EC PRIVATE KEY" => {
                let bad = || key_err("malformed EC PRIVATE KEY");
                let (body, _) = der_expect(der, SEQUENCE).ok_or_else(bad)?;
                let (_version, rest) = der_expect(body, INTEGER).ok_or_else(bad)?;
                let (scalar, mut rest) = der_expect(rest, OCTET_STRING).ok_or_else(bad)?;
                let mut curve = None;
                let mut point = None;
                while let Some((tag, content, next)) = der_read(rest) {
                    match tag {
                        0xa0 => curve = der_expect(content, OID).map(|(o, _)| o),
                        0xa1 => {
                            point = der_expect(content, BIT_STRING)
                                .and_then(|(b, _)| b.split_first())
                                .map(|(_, p)| p)
                        }
                        _ => {}
                    }
                    rest = next;
                }
                let curve = curve.and_then(Curve::from_oid).ok_or_else(|| {
                    key_err("EC PRIVATE KEY: unsupported or missing curve (P-256 and P-384 are)")
                })?;
                let point = point.ok_or_else(|| {
                    key_err("EC PRIVATE KEY without its public key; convert it with `openssl pkcs8 -topk8 -nocrypt`")
                })?;
                EcdsaKeyPair::from_private_key_and_public_key(curve.signing(), scalar, point, &rng)
                    .map(|k| Some(SigningKey::Ec(curve, k)))
                    .map_err(|e| key_err(format!("unusable EC PRIVATE KEY: {e}")))
            }
            _ => Ok(None),
        }
    }
}

fn read_file(path: &Path) -> Result<String, AuthError> {
    std::fs::read_to_string(path).map_err(|source| AuthError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Every public key in a PEM text: public keys as they are, private keys' public halves.
fn public_keys_from_pem(text: &str) -> Result<Vec<PublicKey>, AuthError> {
    let mut keys = Vec::new();
    for (label, der) in pem_blocks(text)? {
        match label.as_str() {
            "PUBLIC KEY" => keys.push(PublicKey::from_spki(&der)?),
            "RSA PUBLIC KEY" => keys.push(PublicKey::Rsa(der)),
            _ => {
                if let Some(k) = SigningKey::from_block(&label, &der)? {
                    keys.push(k.public());
                }
            }
        }
    }
    Ok(keys)
}

// ---------------------------------------------------------------------------------------------
// Issuing

/// Signs service-account tokens (`--service-account-signing-key-file`).
pub struct TokenIssuer {
    key: SigningKey,
    kid: String,
    issuer: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("alg", &self.key.alg())
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .finish()
    }
}

impl TokenIssuer {
    /// Reads the first private key of a PEM file.
    pub fn from_pem_file(path: impl AsRef<Path>, issuer: &str) -> Result<Self, AuthError> {
        let path = path.as_ref();
        Self::from_pem(&read_file(path)?, issuer).map_err(|e| match e {
            AuthError::Key(m) => key_err(format!("{}: {m}", path.display())),
            e => e,
        })
    }

    /// Reads the first private key of a PEM text.
    pub fn from_pem(pem: &str, issuer: &str) -> Result<Self, AuthError> {
        for (label, der) in pem_blocks(pem)? {
            if let Some(key) = SigningKey::from_block(&label, &der)? {
                let kid = key.public().key_id();
                return Ok(TokenIssuer {
                    key,
                    kid,
                    issuer: issuer.to_string(),
                    rng: SystemRandom::new(),
                });
            }
        }
        Err(key_err("no private key found in the PEM data"))
    }

    /// The `kid` of the tokens this issuer signs.
    pub fn key_id(&self) -> &str {
        &self.kid
    }

    /// The `iss` of the tokens this issuer signs.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The signing algorithm (`RS256`, `ES256`, `ES384`).
    pub fn algorithm(&self) -> &'static str {
        self.key.alg()
    }

    /// A signed token and its expiry (unix seconds).
    pub fn issue(&self, req: &TokenRequest<'_>) -> Result<(String, i64), AuthError> {
        if req.namespace.is_empty() || req.service_account.is_empty() {
            return Err(AuthError::Sign(
                "a token needs a namespace and a service account".to_string(),
            ));
        }
        if req.expiration_seconds <= 0 {
            return Err(AuthError::Sign(
                "expirationSeconds must be positive".to_string(),
            ));
        }
        let exp = req
            .now
            .checked_add(req.expiration_seconds)
            .ok_or_else(|| AuthError::Sign("expirationSeconds is too large".to_string()))?;
        let audiences: Vec<&str> = if req.audiences.is_empty() {
            vec![self.issuer.as_str()]
        } else {
            req.audiences.iter().map(String::as_str).collect()
        };
        // go-jose leaves out empty names and uids (`omitempty`).
        let obj_ref = |name: &str, uid: &str| {
            let mut m = serde_json::Map::new();
            if !name.is_empty() {
                m.insert("name".to_string(), json!(name));
            }
            if !uid.is_empty() {
                m.insert("uid".to_string(), json!(uid));
            }
            Value::Object(m)
        };
        let mut k8s = json!({
            "namespace": req.namespace,
            "serviceaccount": obj_ref(req.service_account, req.service_account_uid),
        });
        if let Some((name, uid)) = req.bound_pod {
            k8s["pod"] = obj_ref(name, uid);
        }
        if let Some((name, uid)) = req.bound_node {
            k8s["node"] = obj_ref(name, uid);
        }
        if let Some(w) = req.warn_after {
            k8s["warnafter"] = json!(w);
        }
        // serde_json's map is ordered by key, as go-jose's merged claims are.
        let claims = json!({
            "aud": audiences,
            "exp": exp,
            "iat": req.now,
            "iss": self.issuer,
            "jti": self.uuid()?,
            "kubernetes.io": k8s,
            "nbf": req.now,
            "sub": format!("system:serviceaccount:{}:{}", req.namespace, req.service_account),
        });
        let header = json!({"alg": self.key.alg(), "kid": self.kid});
        let mut token = URL_SAFE_NO_PAD.encode(header.to_string());
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
        let sig = self.key.sign(token.as_bytes(), &self.rng)?;
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(sig));
        Ok((token, exp))
    }

    /// A random (version 4) UUID, as the real `jti`.
    fn uuid(&self) -> Result<String, AuthError> {
        let mut b = [0u8; 16];
        self.rng
            .fill(&mut b)
            .map_err(|_| AuthError::Sign("no randomness".to_string()))?;
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
        Ok(format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Verifying

/// Checks service-account tokens (`--service-account-key-file`, `--service-account-issuer`,
/// `--api-audiences`).
#[derive(Debug, Clone)]
pub struct TokenAuthenticator {
    keys: Vec<(String, PublicKey)>,
    issuers: Vec<String>,
    audiences: Vec<String>,
}

impl TokenAuthenticator {
    /// Reads every key of every file. `audiences` empty means the issuers (kube-apiserver's
    /// default for `--api-audiences`).
    pub fn from_pem_files(
        paths: &[PathBuf],
        issuers: &[String],
        audiences: &[String],
    ) -> Result<Self, AuthError> {
        let mut texts = Vec::new();
        for p in paths {
            let text = read_file(p)?;
            let keys = public_keys_from_pem(&text)
                .map_err(|e| key_err(format!("{}: {e}", p.display())))?;
            if keys.is_empty() {
                return Err(key_err(format!(
                    "{}: no public or private key found",
                    p.display()
                )));
            }
            texts.push(text);
        }
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        Self::from_pem(&refs, issuers, audiences)
    }

    /// As [`from_pem_files`](Self::from_pem_files), from PEM texts.
    pub fn from_pem(
        pems: &[&str],
        issuers: &[String],
        audiences: &[String],
    ) -> Result<Self, AuthError> {
        let mut keys = Vec::new();
        for pem in pems {
            for k in public_keys_from_pem(pem)? {
                let kid = k.key_id();
                if !keys.iter().any(|(_, existing)| existing == &k) {
                    keys.push((kid, k));
                }
            }
        }
        if keys.is_empty() {
            return Err(key_err("no service-account verification key"));
        }
        if issuers.is_empty() {
            return Err(key_err("no service-account issuer"));
        }
        let audiences = if audiences.is_empty() {
            issuers.to_vec()
        } else {
            audiences.to_vec()
        };
        Ok(TokenAuthenticator {
            keys,
            issuers: issuers.to_vec(),
            audiences,
        })
    }

    /// The key ids of the verification keys.
    pub fn key_ids(&self) -> Vec<&str> {
        self.keys.iter().map(|(k, _)| k.as_str()).collect()
    }

    /// The verification keys as a JSON Web Key Set, as kube-apiserver serves it at
    /// `/openid/v1/jwks`: `{"keys":[{"use":"sig","kty":"RSA","kid":…,"alg":"RS256","n":…,"e":…}]}`
    /// (`"kty":"EC"` keys carry `crv`, `x` and `y`).
    pub fn jwks(&self) -> Value {
        let keys: Vec<Value> = self
            .keys
            .iter()
            .filter_map(|(kid, key)| match key {
                PublicKey::Rsa(der) => {
                    let (body, _) = der_expect(der, SEQUENCE)?;
                    let (n, rest) = der_expect(body, INTEGER)?;
                    let (e, _) = der_expect(rest, INTEGER)?;
                    let trim = |b: &[u8]| {
                        let start = b.iter().position(|&x| x != 0).unwrap_or(b.len());
                        URL_SAFE_NO_PAD.encode(&b[start..])
                    };
                    Some(
                        json!({"use": "sig", "kty": "RSA", "kid": kid, "alg": "RS256",
                                "n": trim(n), "e": trim(e)}),
                    )
                }
                PublicKey::Ec(curve, point) => {
                    let coords = point.strip_prefix(&[0x04])?;
                    let (x, y) = coords.split_at(coords.len() / 2);
                    let crv = match curve {
                        Curve::P256 => "P-256",
                        Curve::P384 => "P-384",
                    };
                    Some(
                        json!({"use": "sig", "kty": "EC", "kid": kid, "alg": curve.alg(),
                                "crv": crv, "x": URL_SAFE_NO_PAD.encode(x),
                                "y": URL_SAFE_NO_PAD.encode(y)}),
                    )
                }
            })
            .collect();
        json!({ "keys": keys })
    }

    /// Verifies a bearer token and returns the user it authenticates and its claims.
    pub fn authenticate(&self, token: &str, now: i64) -> Result<(User, Claims), AuthError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("the token is not a JWT"));
        };
        let decode = |part: &str, what: &str| {
            URL_SAFE_NO_PAD
                .decode(part.as_bytes())
                .map_err(|_| invalid(format!("the token's {what} is not base64url")))
        };
        let header: Value = serde_json::from_slice(&decode(h, "header")?)
            .map_err(|_| invalid("the token's header is not JSON"))?;
        let payload: Value = serde_json::from_slice(&decode(p, "payload")?)
            .map_err(|_| invalid("the token's payload is not JSON"))?;
        let sig = decode(s, "signature")?;
        if !payload.is_object() {
            return Err(invalid("the token's payload is not a JSON object"));
        }

        // Not ours unless one of our issuers issued it (checked before the signature, as the
        // real authenticator does, so other token authenticators get their turn).
        let iss = payload["iss"].as_str().unwrap_or("");
        if !self.issuers.iter().any(|i| i == iss) {
            return Err(AuthError::UnknownIssuer(iss.to_string()));
        }

        let alg = header["alg"].as_str().unwrap_or("");
        let kid = header["kid"].as_str();
        let signed = &token.as_bytes()[..h.len() + 1 + p.len()];
        let verified = self
            .keys
            .iter()
            // A token naming a key is checked with that key; one naming none, with every key.
            .filter(|(k, _)| kid.is_none_or(|kid| kid.is_empty() || kid == k))
            .any(|(_, key)| verify(alg, key, signed, &sig));
        if !verified {
            return Err(
                if matches!(alg, "RS256" | "RS384" | "RS512" | "ES256" | "ES384") {
                    invalid("the token's signature is invalid")
                } else {
                    invalid(format!("unsupported signing algorithm {alg:?}"))
                },
            );
        }

        let claims = parse_claims(&payload)?;
        if claims.expires_at == 0 {
            return Err(invalid("the token has no expiry"));
        }
        if now - LEEWAY_SECONDS > claims.expires_at {
            return Err(invalid("service account token has expired"));
        }
        if claims
            .not_before
            .is_some_and(|nbf| now + LEEWAY_SECONDS < nbf)
        {
            return Err(invalid("service account token is not valid yet"));
        }
        if claims
            .issued_at
            .is_some_and(|iat| now + LEEWAY_SECONDS < iat)
        {
            return Err(invalid("service account token is issued in the future"));
        }
        if !claims.audiences.iter().any(|a| self.audiences.contains(a)) {
            return Err(invalid(format!(
                "token audiences {:?} is invalid for the target audiences {:?}",
                claims.audiences, self.audiences
            )));
        }
        if claims.namespace.is_empty() || claims.service_account.name.is_empty() {
            return Err(invalid("the token names no service account"));
        }
        Ok((claims.user(), claims))
    }
}

fn verify(alg: &str, key: &PublicKey, msg: &[u8], sig: &[u8]) -> bool {
    let rsa = |a: &'static signature::RsaParameters, der: &[u8]| {
        UnparsedPublicKey::new(a, der).verify(msg, sig).is_ok()
    };
    match (alg, key) {
        ("RS256", PublicKey::Rsa(der)) => rsa(&signature::RSA_PKCS1_2048_8192_SHA256, der),
        ("RS384", PublicKey::Rsa(der)) => rsa(&signature::RSA_PKCS1_2048_8192_SHA384, der),
        ("RS512", PublicKey::Rsa(der)) => rsa(&signature::RSA_PKCS1_2048_8192_SHA512, der),
        ("ES256", PublicKey::Ec(c @ Curve::P256, point))
        | ("ES384", PublicKey::Ec(c @ Curve::P384, point)) => {
            UnparsedPublicKey::new(c.verification(), point)
                .verify(msg, sig)
                .is_ok()
        }
        _ => false,
    }
}

fn parse_claims(p: &Value) -> Result<Claims, AuthError> {
    let time = |key: &str| -> Result<Option<i64>, AuthError> {
        match &p[key] {
            Value::Null => Ok(None),
            Value::Number(n) => n
                .as_i64()
                .or_else(|| n.as_f64().map(|f| f as i64))
                .map(Some)
                .ok_or_else(|| invalid(format!("the token's {key} is not a time"))),
            _ => Err(invalid(format!("the token's {key} is not a time"))),
        }
    };
    let audiences = match &p["aud"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| invalid("the token's aud is not a list of strings"))?,
        Value::Null => Vec::new(),
        _ => return Err(invalid("the token's aud is not a list of strings")),
    };
    let k = &p["kubernetes.io"];
    if !k.is_object() {
        return Err(invalid("the token has no kubernetes.io claims"));
    }
    let str_of = |v: &Value| v.as_str().unwrap_or("").to_string();
    let obj_ref = |v: &Value| {
        v.is_object().then(|| ObjectRef {
            name: str_of(&v["name"]),
            uid: str_of(&v["uid"]),
        })
    };
    Ok(Claims {
        issuer: str_of(&p["iss"]),
        subject: str_of(&p["sub"]),
        audiences,
        expires_at: time("exp")?.unwrap_or(0),
        issued_at: time("iat")?,
        not_before: time("nbf")?,
        jti: p["jti"].as_str().map(str::to_string),
        namespace: str_of(&k["namespace"]),
        service_account: obj_ref(&k["serviceaccount"]).unwrap_or_default(),
        pod: obj_ref(&k["pod"]),
        secret: obj_ref(&k["secret"]),
        node: obj_ref(&k["node"]),
        warn_after: match &k["warnafter"] {
            Value::Number(n) => n.as_i64(),
            _ => None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISS: &str = "https://kubernetes.default.svc.cluster.local";
    const NOW: i64 = 1_700_000_000;

    fn rcgen_pem(alg: &'static rcgen::SignatureAlgorithm) -> String {
        rcgen::KeyPair::generate_for(alg)
            .expect("generate key")
            .serialize_pem()
    }

    fn rsa_pkcs8_pem() -> String {
        // rcgen (with ring) cannot generate RSA keys; a fixed 2048-bit test key is used.
        TEST_RSA_PKCS8.to_string()
    }

    fn request<'a>(aud: &'a [String]) -> TokenRequest<'a> {
        TokenRequest {
            namespace: "lab",
            service_account: "robot",
            service_account_uid: "sa-uid",
            audiences: aud,
            expiration_seconds: 3600,
            bound_pod: Some(("web-0", "pod-uid")),
            now: NOW,
            ..Default::default()
        }
    }

    fn decode_part(token: &str, i: usize) -> Value {
        let part = token.split('.').nth(i).expect("part");
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("b64")).expect("json")
    }

    fn round_trip(pem: &str, alg: &str) {
        let issuer = TokenIssuer::from_pem(pem, ISS).expect("issuer");
        assert_eq!(issuer.algorithm(), alg);
        let (token, exp) = issuer.issue(&request(&[])).expect("issue");
        assert_eq!(exp, NOW + 3600);
        let header = decode_part(&token, 0);
        assert_eq!(header, json!({"alg": alg, "kid": issuer.key_id()}));
        let auth = TokenAuthenticator::from_pem(&[pem], &[ISS.to_string()], &[]).expect("auth");
        assert_eq!(auth.key_ids(), vec![issuer.key_id()]);
        let (user, claims) = auth.authenticate(&token, NOW + 10).expect("valid token");
        assert_eq!(user.name, "system:serviceaccount:lab:robot");
        assert_eq!(user.uid, "sa-uid");
        assert_eq!(
            user.groups,
            vec![
                "system:serviceaccounts",
                "system:serviceaccounts:lab",
                "system:authenticated"
            ]
        );
        assert_eq!(user.extra[POD_NAME_KEY], vec!["web-0"]);
        assert_eq!(user.extra[POD_UID_KEY], vec!["pod-uid"]);
        let jti = claims.jti.clone().expect("jti");
        assert_eq!(jti.len(), 36);
        assert_eq!(user.extra[CREDENTIAL_ID_KEY], vec![format!("JTI={jti}")]);
        assert_eq!(claims.audiences, vec![ISS]);
        assert_eq!(claims.issuer, ISS);
        assert_eq!(claims.subject, "system:serviceaccount:lab:robot");
        assert_eq!(claims.expires_at, NOW + 3600);
        assert_eq!(claims.issued_at, Some(NOW));
        assert_eq!(claims.not_before, Some(NOW));
        assert_eq!(
            claims.pod,
            Some(ObjectRef {
                name: "web-0".into(),
                uid: "pod-uid".into()
            })
        );
    }

    #[test]
    fn rsa_round_trip() {
        round_trip(&rsa_pkcs8_pem(), "RS256");
    }

    #[test]
    fn rsa_pkcs1_key() {
        // The same key as `openssl genrsa` writes it (PKCS#1).
        round_trip(TEST_RSA_PKCS1, "RS256");
        let a = TokenIssuer::from_pem(TEST_RSA_PKCS1, ISS).expect("pkcs1");
        let b = TokenIssuer::from_pem(TEST_RSA_PKCS8, ISS).expect("pkcs8");
        assert_eq!(a.key_id(), b.key_id());
    }

    #[test]
    fn ec_round_trips() {
        round_trip(&rcgen_pem(&rcgen::PKCS_ECDSA_P256_SHA256), "ES256");
        round_trip(&rcgen_pem(&rcgen::PKCS_ECDSA_P384_SHA384), "ES384");
    }

    #[test]
    fn kid_is_sha256_of_spki() {
        // The public half of TEST_RSA_PKCS8 as `openssl pkey -pubout` writes it; its kid is
        // the SHA-256 of exactly that DER.
        let issuer = TokenIssuer::from_pem(TEST_RSA_PKCS8, ISS).expect("issuer");
        let blocks = pem_blocks(TEST_RSA_PUBLIC).expect("pem");
        let want =
            URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, &blocks[0].1));
        assert_eq!(issuer.key_id(), want);
        // A public-key file verifies the tokens of its private key.
        let (token, _) = issuer.issue(&request(&[])).expect("issue");
        let auth = TokenAuthenticator::from_pem(&[TEST_RSA_PUBLIC], &[ISS.to_string()], &[])
            .expect("auth");
        assert!(auth.authenticate(&token, NOW).is_ok());
        // EC: the kid is the hash of the SPKI rcgen writes for the key.
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let issuer = TokenIssuer::from_pem(&kp.serialize_pem(), ISS).expect("issuer");
        let want = URL_SAFE_NO_PAD.encode(ring::digest::digest(
            &ring::digest::SHA256,
            &pem_blocks(&kp.public_key_pem()).expect("pem")[0].1,
        ));
        assert_eq!(issuer.key_id(), want);
        let auth = TokenAuthenticator::from_pem(&[&kp.public_key_pem()], &[ISS.to_string()], &[])
            .expect("auth");
        let (token, _) = issuer.issue(&request(&[])).expect("issue");
        assert!(auth.authenticate(&token, NOW).is_ok());
    }

    #[test]
    fn sec1_ec_key() {
        // `openssl ecparam -name prime256v1 -genkey` output: SEC 1 with curve and public key.
        let pkcs8 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let der = pkcs8.serialize_der();
        // Dig the ECPrivateKey out of the PKCS#8 wrapper and add the curve parameter.
        let (body, _) = der_expect(&der, SEQUENCE).expect("seq");
        let (_, rest) = der_expect(body, INTEGER).expect("version");
        let (_, rest) = der_expect(rest, SEQUENCE).expect("alg");
        let (ec, _) = der_expect(rest, OCTET_STRING).expect("key");
        let (inner, _) = der_expect(ec, SEQUENCE).expect("ecpk");
        let (ver, rest) = der_expect(inner, INTEGER).expect("ver");
        let (scalar, rest) = der_expect(rest, OCTET_STRING).expect("scalar");
        let mut sec1 = der_write(INTEGER, ver);
        sec1.extend(der_write(OCTET_STRING, scalar));
        sec1.extend(der_write(0xa0, &der_write(OID, OID_P256)));
        let mut rest = rest;
        while let Some((tag, content, next)) = der_read(rest) {
            if tag == 0xa1 {
                sec1.extend(der_write(0xa1, content));
            }
            rest = next;
        }
        let sec1 = der_write(SEQUENCE, &sec1);
        let pem = format!(
            "-----BEGIN EC PRIVATE KEY-----\n{}\n-----END EC PRIVATE KEY-----\n",
            STANDARD.encode(sec1)
        );
        let a = TokenIssuer::from_pem(&pem, ISS).expect("sec1");
        let b = TokenIssuer::from_pem(&pkcs8.serialize_pem(), ISS).expect("pkcs8");
        assert_eq!(a.key_id(), b.key_id());
        round_trip(&pem, "ES256");
    }

    #[test]
    fn claims_are_the_real_ones() {
        let pem = rcgen_pem(&rcgen::PKCS_ECDSA_P256_SHA256);
        let issuer = TokenIssuer::from_pem(&pem, ISS).expect("issuer");
        let aud = vec!["vault".to_string(), "https://example".to_string()];
        let mut req = request(&aud);
        req.bound_node = Some(("n1", "node-uid"));
        req.warn_after = Some(NOW + 3607);
        let (token, _) = issuer.issue(&req).expect("issue");
        let mut payload = decode_part(&token, 1);
        let jti = payload["jti"].take();
        assert!(jti.is_string());
        assert_eq!(
            payload,
            json!({
                "aud": ["vault", "https://example"], "exp": NOW + 3600, "iat": NOW, "iss": ISS,
                "jti": null, "nbf": NOW, "sub": "system:serviceaccount:lab:robot",
                "kubernetes.io": {
                    "namespace": "lab",
                    "node": {"name": "n1", "uid": "node-uid"},
                    "pod": {"name": "web-0", "uid": "pod-uid"},
                    "serviceaccount": {"name": "robot", "uid": "sa-uid"},
                    "warnafter": NOW + 3607,
                },
            })
        );
        // Keys in the encoded payload are sorted, as go-jose writes them.
        let raw = String::from_utf8(
            URL_SAFE_NO_PAD
                .decode(token.split('.').nth(1).expect("payload"))
                .expect("b64"),
        )
        .expect("utf8");
        assert!(raw.starts_with("{\"aud\":[\"vault\",\"https://example\"],\"exp\":"));
        // Audience checks: the token is for vault, not for the API server...
        let auth = TokenAuthenticator::from_pem(&[&pem], &[ISS.to_string()], &[]).expect("auth");
        let err = auth.authenticate(&token, NOW).expect_err("wrong audience");
        assert!(
            err.to_string()
                .contains("is invalid for the target audiences"),
            "{err}"
        );
        // ...unless the API server accepts vault.
        let auth =
            TokenAuthenticator::from_pem(&[&pem], &[ISS.to_string()], &["vault".to_string()])
                .expect("auth");
        let (user, claims) = auth.authenticate(&token, NOW).expect("ok");
        assert_eq!(user.extra[NODE_NAME_KEY], vec!["n1"]);
        assert_eq!(user.extra[NODE_UID_KEY], vec!["node-uid"]);
        assert_eq!(claims.warn_after, Some(NOW + 3607));
        assert_eq!(
            claims.service_account,
            ObjectRef {
                name: "robot".into(),
                uid: "sa-uid".into()
            }
        );
    }

    #[test]
    fn expired_and_early_tokens() {
        let pem = rcgen_pem(&rcgen::PKCS_ECDSA_P256_SHA256);
        let issuer = TokenIssuer::from_pem(&pem, ISS).expect("issuer");
        let auth = TokenAuthenticator::from_pem(&[&pem], &[ISS.to_string()], &[]).expect("auth");
        let (token, exp) = issuer.issue(&request(&[])).expect("issue");
        // One minute of leeway either side, as go-jose.
        assert!(auth.authenticate(&token, exp + 60).is_ok());
        let err = auth.authenticate(&token, exp + 61).expect_err("expired");
        assert!(matches!(err, AuthError::InvalidToken(_)));
        assert_eq!(err.to_string(), "service account token has expired");
        assert!(auth.authenticate(&token, NOW - 60).is_ok());
        let err = auth.authenticate(&token, NOW - 61).expect_err("early");
        assert_eq!(err.to_string(), "service account token is not valid yet");
    }

    #[test]
    fn tampered_and_foreign_tokens() {
        let pem = rcgen_pem(&rcgen::PKCS_ECDSA_P256_SHA256);
        let other = rcgen_pem(&rcgen::PKCS_ECDSA_P256_SHA256);
        let issuer = TokenIssuer::from_pem(&pem, ISS).expect("issuer");
        let auth = TokenAuthenticator::from_pem(&[&pem], &[ISS.to_string()], &[]).expect("auth");
        let (token, _) = issuer.issue(&request(&[])).expect("issue");

        // A changed payload (another service account) keeps the old signature.
        let parts: Vec<&str> = token.split('.').collect();
        let mut payload = decode_part(&token, 1);
        payload["kubernetes.io"]["serviceaccount"]["name"] = json!("admin");
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(payload.to_string()),
            parts[2]
        );
        let err = auth.authenticate(&forged, NOW).expect_err("tampered");
        assert!(matches!(err, AuthError::InvalidToken(_)), "{err}");

        // Signed by a key the server does not trust.
        let stranger = TokenIssuer::from_pem(&other, ISS).expect("issuer");
        let (token2, _) = stranger.issue(&request(&[])).expect("issue");
        assert!(matches!(
            auth.authenticate(&token2, NOW),
            Err(AuthError::InvalidToken(_))
        ));
        // Several keys: either verifies.
        let both =
            TokenAuthenticator::from_pem(&[&pem, &other], &[ISS.to_string()], &[]).expect("auth");
        assert!(both.authenticate(&token, NOW).is_ok());
        assert!(both.authenticate(&token2, NOW).is_ok());

        // Another issuer.
        let foreign = TokenIssuer::from_pem(&pem, "https://elsewhere").expect("issuer");
        let (token3, _) = foreign.issue(&request(&[])).expect("issue");
        assert!(matches!(
            auth.authenticate(&token3, NOW),
            Err(AuthError::UnknownIssuer(i)) if i == "https://elsewhere"
        ));

        // alg none and garbage.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            parts[1]
        );
        assert!(matches!(
            auth.authenticate(&none, NOW),
            Err(AuthError::InvalidToken(_))
        ));
        for junk in [
            "",
            "a",
            "a.b",
            "a.b.c",
            "a.b.c.d",
            "....",
            "é.é.é",
            &token[..20],
        ] {
            assert!(auth.authenticate(junk, NOW).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn jwks() {
        let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let auth = TokenAuthenticator::from_pem(
            &[TEST_RSA_PUBLIC, &ec.serialize_pem()],
            &[ISS.to_string()],
            &[],
        )
        .expect("auth");
        let jwks = auth.jwks();
        let keys = jwks["keys"].as_array().expect("keys");
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0]["kty"], "RSA");
        assert_eq!(keys[0]["alg"], "RS256");
        assert_eq!(keys[0]["use"], "sig");
        assert_eq!(keys[0]["e"], "AQAB");
        let n = URL_SAFE_NO_PAD
            .decode(keys[0]["n"].as_str().expect("n"))
            .expect("b64");
        assert_eq!(n.len(), 256);
        assert_eq!(keys[1]["kty"], "EC");
        assert_eq!(keys[1]["crv"], "P-256");
        assert_eq!(keys[1]["alg"], "ES256");
        let x = URL_SAFE_NO_PAD
            .decode(keys[1]["x"].as_str().expect("x"))
            .expect("b64");
        assert_eq!(x.len(), 32);
        assert_eq!(keys[0]["kid"], auth.key_ids()[0]);
    }

    #[test]
    fn bad_key_files() {
        assert!(TokenIssuer::from_pem("not pem", ISS).is_err());
        assert!(TokenIssuer::from_pem(TEST_RSA_PUBLIC, ISS).is_err());
        assert!(TokenAuthenticator::from_pem(&["nothing"], &[ISS.to_string()], &[]).is_err());
        let truncated = "-----BEGIN PRIVATE KEY-----\nMIIE\n";
        assert!(TokenIssuer::from_pem(truncated, ISS).is_err());
        let garbage = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        assert!(TokenAuthenticator::from_pem(&[garbage], &[ISS.to_string()], &[]).is_err());
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sa.key");
        std::fs::write(&path, TEST_RSA_PKCS1).expect("write");
        let pubp = dir.path().join("sa.pub");
        std::fs::write(&pubp, TEST_RSA_PUBLIC).expect("write");
        let issuer = TokenIssuer::from_pem_file(&path, ISS).expect("issuer");
        let auth =
            TokenAuthenticator::from_pem_files(&[pubp, path.clone()], &[ISS.to_string()], &[])
                .expect("auth");
        assert_eq!(auth.key_ids().len(), 1, "the same key twice counts once");
        let (token, _) = issuer.issue(&request(&[])).expect("issue");
        assert!(auth.authenticate(&token, NOW).is_ok());
        assert!(matches!(
            TokenIssuer::from_pem_file(dir.path().join("missing"), ISS),
            Err(AuthError::Io { .. })
        ));
    }

    // A throwaway 2048-bit RSA key, generated for these tests only.
    const TEST_RSA_PKCS8: &str = "-----BEGIN PRIVATE KEY-----
MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQDD045lUSqyx0d/
nolueeqZL7jse8ewzYEHsZX9Fvt+zPCkzKijC+Rr3/zsl30+S4ijcPOC0a9JBnC/
irKVqKCXR1iqNG1SeN3dRxKZs38F3jinpn4q5TxCifpaZu4oPP+IV4L+7Ki966q+
A7a2S1qHmnnXd3e4+KB9x7nmHigSNM5TIoyiLmRrr5O7jWPaqZ3gC4uFP5LXaTRE
tHjdoRsATY9OVXiYBLXrtd1UQ+matnRsn29BtsfVUxOLJO48f4zVZxKYjHKYGiZX
WSLlep7pwTuwg99uTv0Ebe62+a5J/0duY2+80zBLXgrpsqGeWpd9MUXU6rYTKsIi
fYlOAyl7AgMBAAECggEADdfRMPQCwYjufXo0EJAOwk3KKUbQxXyphTqLtfdKHQXD
cdWZNY7G0sy5Nke5OKOh9kfVoab4A1YGDLbzITrpQKMbBKEtzzmFxDmHej+4QtkZ
hoRxq8+bqb/TklDEv38cY0N9xPlELnTP6PHImJdiwBjunwmDeEXJy/UdUkP0ejY1
3rQcdC2lntB9o6K6EFwidzsIyUTdizlhjVThLt8VwLKjjOrJTA4fb6CXg7nQYbLV
Gx0eBRl5A1yLllrvAe1gDmO0KrM8TzQ67p8koJ7jUzTw6VGP8JWf86tKEXgmbyls
AYdC/94iI/KVfyR996NJWyl9m2c31sxl42retHJHxQKBgQD8Rd1Jfoie5O/oWV8o
bOJF9+OIKdkVElg/y64qABkKn6qVeTfc0Rkb7ShluBGqvmmH1mwzf5Q7EnEtdqew
HEOfnl9yKAn2vLWd342K774Pxzj53omegEaqgT0W/oHQwjM0Iz5psCcmA8a2uUuG
sn/NUWUHJqTvyTyFVPZJRMg0HwKBgQDGuDPIbGOJsYyFki3qzY6acdS9HervofaZ
pRZXWhrB2+d9s7irGfVwGrbPhFM/NbbRa9nkhaDMY/lXD14VuyDJaWa7PqwvOh7o
9MjAoirkuVM/yfnQ0nbrMRxIaehBeXmVrU3wwkdOB8ic1yvagt6J04XXPnyO9zSz
Amep38A/JQKBgEAUYwRTHtL1pjbn1LMJDWTmdaZVsu2WTlJOI3xJsBKxwfvb4aO2
fWFJmXRVEC/F1DqL7cobAwUKRzNcK3Yhh8/Yw7fUkctZ3ewvJ939zdJmMYPO0jgv
r0OKNoFLvp/PZIA+35CrDRar6OLrKFMbrjjyDu6FE2pRPI1FqpWr4grTAoGABe8Y
NMLv0fvIS3DLCDjtKjV9+cu76T335Cym1yLsq59KcVl9iTZ0Os3Bab700W1kMSq8
TfOjkpblqjDeSV3WI82O8MZ1U8+zfpdYq0/sYfoav0vjttWiEXHc+1iWQ+ZBuDN9
oVPb1zuqROyz9Yl05b64P24xP/+nxjSrLcptrjUCgYA9+QnuISp4+oPR4mI03xqA
X95EXf9uttEaQQIkD645olXSocBjs1Ff0U5F2Hem4JJ1xWJD7P6YR6f27kJppRPL
GLSm5gyrNLpB98Ia6eBg7IxnPXJcGgb800kVcbY9QK0cbEZCsv/6exb1pZLxzFyB
oTsNHjCI6u88WB29/UsWiQ==
-----END PRIVATE KEY-----
";
    const TEST_RSA_PKCS1: &str = "-----BEGIN RSA PRIVATE KEY-----
MIIEogIBAAKCAQEAw9OOZVEqssdHf56JbnnqmS+47HvHsM2BB7GV/Rb7fszwpMyo
owvka9/87Jd9PkuIo3DzgtGvSQZwv4qylaigl0dYqjRtUnjd3UcSmbN/Bd44p6Z+
KuU8Qon6WmbuKDz/iFeC/uyoveuqvgO2tktah5p513d3uPigfce55h4oEjTOUyKM
oi5ka6+Tu41j2qmd4AuLhT+S12k0RLR43aEbAE2PTlV4mAS167XdVEPpmrZ0bJ9v
QbbH1VMTiyTuPH+M1WcSmIxymBomV1ki5Xqe6cE7sIPfbk79BG3utvmuSf9HbmNv
vNMwS14K6bKhnlqXfTFF1Oq2EyrCIn2JTgMpewIDAQABAoIBAA3X0TD0AsGI7n16
NBCQDsJNyilG0MV8qYU6i7X3Sh0Fw3HVmTWOxtLMuTZHuTijofZH1aGm+ANWBgy2
8yE66UCjGwShLc85hcQ5h3o/uELZGYaEcavPm6m/05JQxL9/HGNDfcT5RC50z+jx
yJiXYsAY7p8Jg3hFycv1HVJD9Ho2Nd60HHQtpZ7QfaOiuhBcInc7CMlE3Ys5YY1U
4S7fFcCyo4zqyUwOH2+gl4O50GGy1RsdHgUZeQNci5Za7wHtYA5jtCqzPE80Ou6f
JKCe41M08OlRj/CVn/OrShF4Jm8pbAGHQv/eIiPylX8kffejSVspfZtnN9bMZeNq
3rRyR8UCgYEA/EXdSX6InuTv6FlfKGziRffjiCnZFRJYP8uuKgAZCp+qlXk33NEZ
G+0oZbgRqr5ph9ZsM3+UOxJxLXansBxDn55fcigJ9ry1nd+Niu++D8c4+d6JnoBG
qoE9Fv6B0MIzNCM+abAnJgPGtrlLhrJ/zVFlByak78k8hVT2SUTINB8CgYEAxrgz
yGxjibGMhZIt6s2OmnHUvR3q76H2maUWV1oawdvnfbO4qxn1cBq2z4RTPzW20WvZ
5IWgzGP5Vw9eFbsgyWlmuz6sLzoe6PTIwKIq5LlTP8n50NJ26zEcSGnoQXl5la1N
8MJHTgfInNcr2oLeidOF1z58jvc0swJnqd/APyUCgYBAFGMEUx7S9aY259SzCQ1k
5nWmVbLtlk5STiN8SbASscH72+Gjtn1hSZl0VRAvxdQ6i+3KGwMFCkczXCt2IYfP
2MO31JHLWd3sLyfd/c3SZjGDztI4L69DijaBS76fz2SAPt+Qqw0Wq+ji6yhTG644
8g7uhRNqUTyNRaqVq+IK0wKBgAXvGDTC79H7yEtwywg47So1ffnLu+k99+Qsptci
7KufSnFZfYk2dDrNwWm+9NFtZDEqvE3zo5KW5aow3kld1iPNjvDGdVPPs36XWKtP
7GH6Gr9L47bVohFx3PtYlkPmQbgzfaFT29c7qkTss/WJdOW+uD9uMT//p8Y0qy3K
ba41AoGAPfkJ7iEqePqD0eJiNN8agF/eRF3/brbRGkECJA+uOaJV0qHAY7NRX9FO
Rdh3puCSdcViQ+z+mEen9u5CaaUTyxi0puYMqzS6QffCGungYOyMZz1yXBoG/NNJ
FXG2PUCtHGxGQrL/+nsW9aWS8cxcgaE7DR4wiOrvPFgdvf1LFok=
-----END RSA PRIVATE KEY-----
";
    const TEST_RSA_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAw9OOZVEqssdHf56Jbnnq
mS+47HvHsM2BB7GV/Rb7fszwpMyoowvka9/87Jd9PkuIo3DzgtGvSQZwv4qylaig
l0dYqjRtUnjd3UcSmbN/Bd44p6Z+KuU8Qon6WmbuKDz/iFeC/uyoveuqvgO2tkta
h5p513d3uPigfce55h4oEjTOUyKMoi5ka6+Tu41j2qmd4AuLhT+S12k0RLR43aEb
AE2PTlV4mAS167XdVEPpmrZ0bJ9vQbbH1VMTiyTuPH+M1WcSmIxymBomV1ki5Xqe
6cE7sIPfbk79BG3utvmuSf9HbmNvvNMwS14K6bKhnlqXfTFF1Oq2EyrCIn2JTgMp
ewIDAQAB
-----END PUBLIC KEY-----
";
}
