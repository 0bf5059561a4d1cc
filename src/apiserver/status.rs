//! `Status`: how the API server says no, shaped exactly as kubectl and client-go read it
//! (`kind: Status`, `status: Failure`, a `reason`, a `code`, `details` naming the object and, for
//! validation errors, one `cause` per bad field).

use serde_json::{Value, json};

/// An API error: the HTTP code, the machine-readable reason and the message a user reads.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

/// What is wrong with a field (apimachinery's `field.ErrorType`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorType {
    /// `Required value`
    Required,
    /// `Invalid value: "x": detail`
    Invalid,
    /// `Duplicate value: "x"`
    Duplicate,
    /// `Unsupported value: "x": supported values: "a", "b"`
    NotSupported(Vec<&'static str>),
    /// `Forbidden: detail`
    Forbidden,
    /// `Not found: "x"`
    NotFound,
}

/// One invalid field of a 422 Invalid answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub kind: ErrorType,
    pub field: String,
    /// The offending value as Go prints it (strings quoted, numbers bare).
    pub value: String,
    pub detail: String,
}

impl FieldError {
    pub fn invalid(field: impl Into<String>, value: &Value, detail: impl Into<String>) -> Self {
        FieldError {
            kind: ErrorType::Invalid,
            field: field.into(),
            value: go_value(value),
            detail: detail.into(),
        }
    }

    /// An invalid string value (the common case).
    pub fn invalid_str(field: impl Into<String>, value: &str, detail: impl Into<String>) -> Self {
        FieldError::invalid(field, &Value::String(value.to_string()), detail)
    }

    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            kind: ErrorType::Required,
            field: field.into(),
            value: String::new(),
            detail: detail.into(),
        }
    }

    pub fn duplicate(field: impl Into<String>, value: &Value) -> Self {
        FieldError {
            kind: ErrorType::Duplicate,
            field: field.into(),
            value: go_value(value),
            detail: String::new(),
        }
    }

    pub fn not_supported(
        field: impl Into<String>,
        value: &Value,
        supported: &[&'static str],
    ) -> Self {
        FieldError {
            kind: ErrorType::NotSupported(supported.to_vec()),
            field: field.into(),
            value: go_value(value),
            detail: String::new(),
        }
    }

    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            kind: ErrorType::Forbidden,
            field: field.into(),
            value: String::new(),
            detail: detail.into(),
        }
    }

    /// The cause's reason (`FieldValueInvalid`, …).
    pub fn reason(&self) -> &'static str {
        match self.kind {
            ErrorType::Required => "FieldValueRequired",
            ErrorType::Invalid => "FieldValueInvalid",
            ErrorType::Duplicate => "FieldValueDuplicate",
            ErrorType::NotSupported(_) => "FieldValueNotSupported",
            ErrorType::Forbidden => "FieldValueForbidden",
            ErrorType::NotFound => "FieldValueNotFound",
        }
    }

    /// The message without the field (`Invalid value: "x": detail`), as in a cause.
    pub fn body(&self) -> String {
        let with_detail = |head: String| {
            if self.detail.is_empty() {
                head
            } else {
                format!("{head}: {}", self.detail)
            }
        };
        match &self.kind {
            ErrorType::Required => with_detail("Required value".into()),
            ErrorType::Invalid => with_detail(format!("Invalid value: {}", self.value)),
            ErrorType::Duplicate => format!("Duplicate value: {}", self.value),
            ErrorType::NotSupported(values) => {
                let list: Vec<String> = values.iter().map(|v| format!("\"{v}\"")).collect();
                format!(
                    "Unsupported value: {}: supported values: {}",
                    self.value,
                    list.join(", ")
                )
            }
            ErrorType::Forbidden => with_detail("Forbidden".into()),
            ErrorType::NotFound => format!("Not found: {}", self.value),
        }
    }
}

/// A value printed as Go's field errors print it: strings quoted, numbers and booleans bare.
fn go_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, group: &str, kind: &str, name: &str) -> ApiError {
        let mut d = json!({ "name": name, "kind": kind });
        if !group.is_empty() {
            d["group"] = json!(group);
        }
        self.details = Some(d);
        self
    }

    /// 404: `configmaps "x" not found`.
    pub fn not_found(group: &str, resource: &str, name: &str) -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", qualified(group, resource)),
        )
        .with_details(group, resource, name)
    }

    /// 409: `configmaps "x" already exists`.
    pub fn already_exists(group: &str, resource: &str, name: &str) -> ApiError {
        ApiError::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", qualified(group, resource)),
        )
        .with_details(group, resource, name)
    }

    /// 409: the object changed since the client read it.
    pub fn conflict(group: &str, resource: &str, name: &str) -> ApiError {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                qualified(group, resource)
            ),
        )
        .with_details(group, resource, name)
    }

    /// 422: `ConfigMap "Bad" is invalid: metadata.name: Invalid value: …`.
    pub fn invalid(group: &str, kind: &str, name: &str, errors: &[FieldError]) -> ApiError {
        let list: Vec<String> = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.body()))
            .collect();
        // The kind is qualified with its group (`Deployment.apps "d" is invalid`).
        let qualified_kind = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let message = if list.len() == 1 {
            format!("{qualified_kind} \"{name}\" is invalid: {}", list[0])
        } else {
            format!(
                "{qualified_kind} \"{name}\" is invalid: [{}]",
                list.join(", ")
            )
        };
        let mut err = ApiError::new(422, "Invalid", message).with_details(group, kind, name);
        if let Some(d) = err.details.as_mut() {
            d["causes"] = Value::Array(
                errors
                    .iter()
                    .map(|e| {
                        json!({
                            "reason": e.reason(),
                            "message": e.body(),
                            "field": e.field,
                        })
                    })
                    .collect(),
            );
        }
        err
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(401, "Unauthorized", "Unauthorized")
    }

    /// 403 in the words of the RBAC authorizer.
    pub fn forbidden(
        user: &str,
        verb: &str,
        group: &str,
        resource: &str,
        ns: Option<&str>,
    ) -> ApiError {
        let scope = match ns {
            Some(ns) => format!(" in the namespace \"{ns}\""),
            None => " at the cluster scope".to_string(),
        };
        ApiError::new(
            403,
            "Forbidden",
            format!(
                "{resource} is forbidden: User \"{user}\" cannot {verb} resource \"{resource}\" in API group \"{group}\"{scope}"
            ),
        )
        .with_details(group, resource, "")
    }

    pub fn method_not_allowed() -> ApiError {
        ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    /// 410: a watch or list from a revision etcd no longer has.
    pub fn expired(message: impl Into<String>) -> ApiError {
        ApiError::new(410, "Expired", message)
    }

    pub fn too_large() -> ApiError {
        ApiError::new(
            413,
            "RequestEntityTooLarge",
            "Request entity too large: limit is 3145728",
        )
    }

    pub fn unsupported_media_type(content_type: &str) -> ApiError {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {content_type:?})"
            ),
        )
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, "InternalError", message)
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(503, "ServiceUnavailable", message)
    }

    /// The Status object.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        // An unknown reason (an unconverted error) is left out, as Kubernetes' omitempty does.
        if self.reason.is_empty()
            && let Some(m) = s.as_object_mut()
        {
            m.remove("reason");
        }
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_as_the_real_apiserver_writes_them() {
        let s = ApiError::not_found("", "configmaps", "x").to_status();
        assert_eq!(s["message"], "configmaps \"x\" not found");
        assert_eq!(s["code"], 404);
        assert_eq!(s["details"]["kind"], "configmaps");
        let inv = ApiError::invalid(
            "",
            "ConfigMap",
            "Bad",
            &[FieldError::invalid_str(
                "metadata.name",
                "Bad",
                "must be lower case",
            )],
        );
        assert_eq!(
            inv.message,
            "ConfigMap \"Bad\" is invalid: metadata.name: Invalid value: \"Bad\": must be lower case"
        );
        assert_eq!(
            inv.to_status()["details"]["causes"][0]["field"],
            "metadata.name"
        );
        assert!(
            ApiError::forbidden("jane", "list", "", "configmaps", Some("lab"))
                .message
                .ends_with("in API group \"\" in the namespace \"lab\"")
        );
    }
}
