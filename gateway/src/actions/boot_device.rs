//! `PUT /v1/nodes/{node}/management/boot_device`: parse the body, apply (answered 204).

use super::{apply, require_conductor, who, Intent};
use crate::error::ApiError;
use crate::request;
use crate::version::ApiVersion;
use crate::{AppState, Caller};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Extension;
use ferric_model::BootDevice;
use serde_json::{Map, Value};

/// A boot device request as the client wrote it (the device is checked once the node is found:
/// Ironic answers 404 before a bad device).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BootDeviceBody {
    pub device: String,
    pub persistent: bool,
}

pub(crate) fn parse(obj: &Map<String, Value>) -> Result<BootDeviceBody, ApiError> {
    Ok(BootDeviceBody {
        device: request::req_string(obj, "boot_device")?,
        persistent: request::opt_bool(obj, "persistent")?.unwrap_or(false),
    })
}

/// Any node takes a supported device; the conductor refuses what its BMC cannot do.
pub(crate) fn check(body: &BootDeviceBody) -> Result<Intent, ApiError> {
    let device = BootDevice::parse(&body.device).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "Invalid boot device {} specified. Supported boot devices: {}",
            body.device,
            BootDevice::ALL
                .iter()
                .map(|d| d.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    Ok(Intent::BootDevice {
        device,
        persistent: body.persistent,
    })
}

pub async fn set_boot_device(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    Extension(caller): Extension<Caller>,
    Path(ident): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = request::json_body(body, &headers, state.config.body_limit).await?;
    let obj = request::action_object(body, &["boot_device", "persistent"])?;
    let body = parse(&obj)?;
    let node = request::lookup(&state, &ident, v).await?;
    let intent = check(&body)?;
    require_conductor(&state, &node)?;
    apply(&state, &headers, &ident, &node, &who(&caller), intent).await
}

#[cfg(test)]
mod tests {
    use super::super::tests::obj;
    use super::*;
    use serde_json::json;

    #[test]
    fn devices_are_ironic_names() {
        let b = parse(&obj(json!({"boot_device": "pxe", "persistent": "true"}))).unwrap();
        assert_eq!(
            check(&b).unwrap(),
            Intent::BootDevice {
                device: BootDevice::Pxe,
                persistent: true
            }
        );
        let b = parse(&obj(json!({"boot_device": "floppy"}))).unwrap();
        assert!(!b.persistent);
        let e = check(&b).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("Invalid boot device floppy specified. Supported boot devices: "),
            "{e}"
        );
        assert!(matches!(
            parse(&obj(json!({"persistent": true}))),
            Err(ApiError::BadRequest(_))
        ));
    }
}
