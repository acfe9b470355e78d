//! What a caller asks for: the request as it arrived ([`RawRequest`], from the gRPC wire or built from a
//! WasmPlugin) and as the core takes it ([`Request`]), validated in one place so that every edge refuses
//! the same things with the same words.

use crate::digest::Sha256;
use crate::error::Error;
use crate::fetch::oci::auth::DockerConfig;
use crate::policy::PullPolicy;
use crate::source::ModuleUrl;

/// A fetch request as a client put it: text and bytes not yet checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RawRequest {
    pub url: String,
    /// Hex sha256 the module (or, for OCI, its manifest or index) must have; empty: none.
    pub sha256: String,
    pub policy: PullPolicy,
    /// A docker config JSON (`.dockerconfigjson`); empty: none.
    pub pull_secret: Vec<u8>,
    pub resource_name: String,
    pub resource_version: String,
}

/// A request for a module, as the core sees it.
#[derive(Clone, Debug)]
pub struct Request {
    pub url: ModuleUrl,
    pub expected: Option<Sha256>,
    pub policy: PullPolicy,
    pub resource_name: String,
    pub resource_version: String,
    /// Registry credentials the request brought (OCI only).
    pub pull_secret: Option<DockerConfig>,
}

/// The field of a request a refusal is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestField {
    Url,
    Sha256,
    PullPolicy,
    PullSecret,
}

/// A request refused before anything is fetched: the error the daemon answers, and the field it is about.
#[derive(Debug)]
pub struct Refused {
    pub field: RequestField,
    pub error: Error,
}

impl Refused {
    pub fn new(field: RequestField, error: impl Into<Error>) -> Self {
        Refused {
            field,
            error: error.into(),
        }
    }

    /// What is wrong, for a message that names the field itself (`spec.sha256: ...`): the error without its
    /// own mention of the field where it has one.
    pub fn reason(&self) -> String {
        match &self.error {
            Error::Digest(e) => e.to_string(),
            other => other.to_string(),
        }
    }
}

impl From<Refused> for Error {
    fn from(refused: Refused) -> Error {
        refused.error
    }
}

impl Request {
    /// Checks a raw request: the URL's grammar, the digest's form, and the pull secret (read for OCI URLs
    /// only: only registries take credentials).
    pub fn parse(raw: &RawRequest) -> Result<Request, Refused> {
        let url = ModuleUrl::parse(raw.url.trim()).map_err(|e| Refused::new(RequestField::Url, e))?;
        let expected = Sha256::parse_optional(&raw.sha256).map_err(|e| Refused::new(RequestField::Sha256, e))?;
        let pull_secret = match &url {
            ModuleUrl::Oci(_) if !raw.pull_secret.is_empty() => {
                Some(DockerConfig::parse(&raw.pull_secret).map_err(|e| {
                    Refused::new(
                        RequestField::PullSecret,
                        Error::InvalidArgument(format!("pull secret: {e}")),
                    )
                })?)
            }
            _ => None,
        };
        Ok(Request {
            url,
            expected,
            policy: raw.policy,
            resource_name: raw.resource_name.clone(),
            resource_version: raw.resource_version.clone(),
            pull_secret,
        })
    }
}
