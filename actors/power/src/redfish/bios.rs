//! Reading a system's BIOS settings: the `Bios` resource its system links to, and, when the
//! service publishes it, the attribute registry that describes each setting (type, allowed
//! values, bounds), found the way sushy finds it: through `/redfish/v1/Registries`.

use super::RedfishBmc;
use crate::bmc::BmcError;
use ferric_model::BiosSetting;
use serde_json::Value;

/// Registry files looked at, at most, to find the BIOS attribute registry (a BMC lists a few
/// dozen message registries; the attribute registry is named by the `Bios` resource).
const MAX_REGISTRY_FILES: usize = 64;

impl RedfishBmc {
    async fn get_json(&self, path: &str) -> Result<Value, BmcError> {
        let url = if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{}", self.info.address, path)
        };
        let resp = self
            .auth(self.http.get(&url))
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        let resp = self.check(resp).await?;
        resp.json().await.map_err(|e| BmcError::Protocol {
            bmc: self.url.clone(),
            reason: format!("{path} is not JSON: {e}"),
        })
    }

    /// The system's BIOS settings; None when the system has no `Bios` resource.
    pub(super) async fn read_bios(&self) -> Result<Option<Vec<BiosSetting>>, BmcError> {
        let system = self.get_json(&self.info.system).await?;
        let Some(bios_path) = odata_id(system.get("Bios")) else {
            return Ok(None);
        };
        let bios = self.get_json(&bios_path).await?;
        let attributes = bios
            .get("Attributes")
            .and_then(Value::as_object)
            .ok_or_else(|| BmcError::Protocol {
                bmc: self.url.clone(),
                reason: format!("{bios_path} has no Attributes object"),
            })?;
        let mut settings: Vec<BiosSetting> = attributes
            .iter()
            .map(|(name, value)| BiosSetting {
                name: name.clone(),
                value: value_text(value),
                ..Default::default()
            })
            .collect();
        // The registry is optional, as in Ironic: settings without it have only name and value.
        if let Some(name) = bios.get("AttributeRegistry").and_then(Value::as_str) {
            match self.attribute_registry(name).await {
                Ok(Some(entries)) => describe(&mut settings, &entries),
                Ok(None) => {
                    tracing::debug!(bmc = %self.url, registry = name, "BIOS attribute registry not published")
                }
                Err(e) => {
                    tracing::info!(bmc = %self.url, registry = name, error = %e, "cannot read the BIOS attribute registry")
                }
            }
        }
        Ok(Some(settings))
    }

    /// The `RegistryEntries.Attributes` of the attribute registry called `name`: a registry
    /// file whose `Id` or `Registry` is the name, or whose registry's own `Id` is.
    async fn attribute_registry(&self, name: &str) -> Result<Option<Vec<Value>>, BmcError> {
        let root = self.get_json("/redfish/v1").await?;
        let Some(registries) = odata_id(root.get("Registries")) else {
            return Ok(None);
        };
        let collection = self.get_json(&registries).await?;
        let members: Vec<String> = collection
            .get("Members")
            .and_then(Value::as_array)
            .map(|m| m.iter().filter_map(|v| odata_id(Some(v))).collect())
            .unwrap_or_default();
        // Files named like the registry first, then those that look like attribute registries.
        let stem = name.split('.').next().unwrap_or(name).to_ascii_lowercase();
        let mut ordered: Vec<&String> = members
            .iter()
            .filter(|m| m.rsplit('/').next() == Some(name))
            .collect();
        ordered.extend(members.iter().filter(|m| {
            let leaf = m.rsplit('/').next().unwrap_or("").to_ascii_lowercase();
            leaf != name.to_ascii_lowercase()
                && (leaf.contains("attribute") || leaf.contains("bios") || leaf.starts_with(&stem))
        }));
        for file_path in ordered.into_iter().take(MAX_REGISTRY_FILES) {
            let file = self.get_json(file_path).await?;
            let named = [file.get("Id"), file.get("Registry")]
                .iter()
                .any(|v| v.and_then(Value::as_str) == Some(name));
            let Some(uri) = english_location(&file) else {
                continue;
            };
            let registry = self.get_json(&uri).await?;
            if named || registry.get("Id").and_then(Value::as_str) == Some(name) {
                let entries = registry
                    .pointer("/RegistryEntries/Attributes")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                return Ok(Some(entries));
            }
        }
        Ok(None)
    }
}

fn odata_id(v: Option<&Value>) -> Option<String> {
    v?.get("@odata.id")?.as_str().map(str::to_string)
}

/// The location of a registry file in English (`en`, `en-US`), else its first location.
fn english_location(file: &Value) -> Option<String> {
    let locations = file.get("Location")?.as_array()?;
    let uri = |l: &Value| l.get("Uri").and_then(Value::as_str).map(str::to_string);
    locations
        .iter()
        .find(|l| {
            l.get("Language")
                .and_then(Value::as_str)
                .is_some_and(|lang| lang.to_ascii_lowercase().split('-').next() == Some("en"))
        })
        .and_then(uri)
        .or_else(|| locations.iter().find_map(uri))
}

/// A Redfish attribute value as Ironic stores it: text (`true` → `"True"`, as Python's `str`),
/// `null` as None.
pub(crate) fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(true) => Some("True".into()),
        Value::Bool(false) => Some("False".into()),
        other => Some(other.to_string()),
    }
}

/// Adds what the registry says about each setting (sushy's names for Ironic's registry fields).
pub(crate) fn describe(settings: &mut [BiosSetting], entries: &[Value]) {
    let int = |e: &Value, k: &str| e.get(k).and_then(Value::as_i64);
    let flag = |e: &Value, k: &str| e.get(k).and_then(Value::as_bool);
    for s in settings.iter_mut() {
        let Some(e) = entries
            .iter()
            .find(|e| e.get("AttributeName").and_then(Value::as_str) == Some(s.name.as_str()))
        else {
            continue;
        };
        s.attribute_type = e.get("Type").and_then(Value::as_str).map(str::to_string);
        s.allowable_values = e.get("Value").and_then(Value::as_array).map(|values| {
            values
                .iter()
                .filter_map(|v| {
                    v.get("ValueName")
                        .or_else(|| v.get("ValueDisplayName"))
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .collect()
        });
        s.lower_bound = int(e, "LowerBound");
        s.upper_bound = int(e, "UpperBound");
        s.min_length = int(e, "MinLength");
        s.max_length = int(e, "MaxLength");
        s.read_only = flag(e, "ReadOnly");
        s.reset_required = flag(e, "ResetRequired");
        s.unique = flag(e, "IsSystemUniqueProperty");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_read_as_ironic_stores_them_and_registry_fields_are_mapped() {
        assert_eq!(value_text(&json!("Uefi")).as_deref(), Some("Uefi"));
        assert_eq!(value_text(&json!(8)).as_deref(), Some("8"));
        assert_eq!(value_text(&json!(true)).as_deref(), Some("True"));
        assert_eq!(value_text(&json!(null)), None);
        let mut settings = vec![
            BiosSetting {
                name: "BootMode".into(),
                value: Some("Uefi".into()),
                ..Default::default()
            },
            BiosSetting {
                name: "NumCores".into(),
                value: Some("8".into()),
                ..Default::default()
            },
            BiosSetting {
                name: "Unlisted".into(),
                ..Default::default()
            },
        ];
        describe(
            &mut settings,
            &[
                json!({"AttributeName": "BootMode", "Type": "Enumeration", "ReadOnly": false,
                       "ResetRequired": true,
                       "Value": [{"ValueName": "Bios"}, {"ValueDisplayName": "UEFI"}, {}]}),
                json!({"AttributeName": "NumCores", "Type": "Integer", "LowerBound": 1,
                       "UpperBound": 64, "ReadOnly": true, "IsSystemUniqueProperty": false}),
            ],
        );
        assert_eq!(settings[0].attribute_type.as_deref(), Some("Enumeration"));
        assert_eq!(
            settings[0].allowable_values.as_deref(),
            Some(&["Bios".to_string(), "UEFI".to_string()][..])
        );
        assert_eq!(settings[0].reset_required, Some(true));
        assert_eq!(
            (settings[1].lower_bound, settings[1].upper_bound),
            (Some(1), Some(64))
        );
        assert_eq!(
            (settings[1].read_only, settings[1].unique),
            (Some(true), Some(false))
        );
        assert_eq!(
            settings[2],
            BiosSetting {
                name: "Unlisted".into(),
                ..Default::default()
            }
        );
    }

    #[test]
    fn the_english_location_is_preferred() {
        let file = json!({"Location": [
            {"Language": "ja", "Uri": "/ja"}, {"Language": "en-US", "Uri": "/en"}]});
        assert_eq!(english_location(&file).as_deref(), Some("/en"));
        let other = json!({"Location": [{"Language": "de", "Uri": "/de"}]});
        assert_eq!(english_location(&other).as_deref(), Some("/de"));
        assert_eq!(english_location(&json!({})), None);
    }
}
