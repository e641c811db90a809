//! Masking of secrets in `driver_info` and `instance_info` on the way out, for every caller
//! whatever its role (Ironic masks them unless a policy says otherwise; Ferric has no such
//! policy). The stored values are untouched, so a JSON Patch still works on the real ones.

pub use ferric_model::driver_info::is_secret_key;
use serde_json::Value;

/// What Ironic shows instead of a secret.
pub const MASK: &str = "******";

/// Replaces the value of every secret key, at any depth, by [`MASK`].
pub fn mask(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                if is_secret_key(k) && !val.is_null() {
                    *val = Value::String(MASK.into());
                } else {
                    mask(val);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask),
        _ => {}
    }
}

/// Ironic also hides a node's config drive and image URL (it may carry a temporary credential).
pub fn mask_instance_info(v: &mut Value) {
    if let Value::Object(map) = v {
        for key in ["configdrive", "image_url"] {
            if let Some(val) = map.get_mut(key) {
                if !val.is_null() && val != "" {
                    *val = Value::String(MASK.into());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_masked_at_any_depth() {
        let mut v = json!({
            "ipmi_address": "10.0.0.5",
            "ipmi_username": "admin",
            "ipmi_password": "hunter2",
            "redfish_password": 5,
            "snmp_auth_key": "k",
            "snmp_priv_key": "k",
            "auth_token": "t",
            "nested": {"SecretThing": "s", "ok": "v", "list": [{"password": "p"}]},
            "empty_password": null,
        });
        mask(&mut v);
        assert_eq!(v["ipmi_address"], "10.0.0.5");
        assert_eq!(v["ipmi_username"], "admin");
        for k in [
            "ipmi_password",
            "redfish_password",
            "snmp_auth_key",
            "snmp_priv_key",
            "auth_token",
        ] {
            assert_eq!(v[k], MASK, "{k}");
        }
        assert_eq!(v["nested"]["SecretThing"], MASK);
        assert_eq!(v["nested"]["ok"], "v");
        assert_eq!(v["nested"]["list"][0]["password"], MASK);
        assert!(v["empty_password"].is_null());
    }

    #[test]
    fn instance_info_hides_configdrive_and_image_url() {
        let mut v = json!({"configdrive": "H4sI...", "image_url": "http://x/?temp_url_sig=1", "root_gb": 10});
        mask_instance_info(&mut v);
        assert_eq!(v["configdrive"], MASK);
        assert_eq!(v["image_url"], MASK);
        assert_eq!(v["root_gb"], 10);
    }
}
