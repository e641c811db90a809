//! The command API of a simulated machine's agent, as pure state: the commands of one agent run
//! in issue order, what Ironic Python Agent (13.0) answers to a command (its extensions, commands,
//! parameters, "busy" and "not found" rules, result and error shapes) and what a finished
//! asynchronous command does to the machine. No I/O and no clock: `agent_api` serves it over
//! HTTP, the fleet runs the timers of asynchronous commands and applies their effects.
//!
//! | command | kind | `command_result` |
//! |---|---|---|
//! | `clean.get_clean_steps`, `deploy.get_deploy_steps`, `service.get_service_steps` | sync | `{"<kind>_steps": {"GenericHardwareManager": [...]}, "hardware_manager_version": {...}}` |
//! | `clean.execute_clean_step` (and deploy, service) | async | `{"<kind>_result": ..., "<kind>_step": <step as sent>}` |
//! | `standby.prepare_image` | async | `{"result": "prepare_image: image (<id>) written to device /dev/sda root_uuid=..."}` |
//! | `standby.run_image` (reboot), `standby.power_off` | async | `null`; then the machine reboots / powers off |
//! | `standby.sync` | sync | `null` |
//! | `standby.get_partition_uuids` | sync | `{}` before an image was written, else its partition uuids |
//! | `image.install_bootloader` | async | `null` |
//! | `rescue.finalize_rescue`, `system.lockdown` | sync | `null`; then the agent exits |
//! | `log.collect_system_logs` | sync | `{"system_logs": <base64>}` |
//! | `poll.get_hardware_info` | sync | the machine's inventory |
//!
//! IPA's quirks kept on purpose: a synchronous command that fails is named by its full name
//! (`rescue.finalize_rescue`), a successful one by its short name; a step run with a
//! `<kind>_version` other than the agent's ends `CLEAN_VERSION_MISMATCH` (for every kind).

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::hardware;

/// The key the step lists are under: the hardware manager's class name.
pub const MANAGER_CLASS: &str = "GenericHardwareManager";
/// The hardware manager's name and version in `hardware_manager_version`.
pub const MANAGER_NAME: &str = "generic_hardware_manager";
pub const MANAGER_VERSION: &str = "1.2";
/// The disk an image is written to (the root disk of `hardware`).
const ROOT_DEVICE: &str = "/dev/sda";

/// A command's `command_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Status {
    #[serde(rename = "RUNNING")]
    Running,
    #[serde(rename = "SUCCEEDED")]
    Succeeded,
    #[serde(rename = "FAILED")]
    Failed,
    /// IPA keeps cleaning's old text for every kind of step.
    #[serde(rename = "CLEAN_VERSION_MISMATCH")]
    VersionMismatch,
}

/// An IPA `RESTError` as a command's `command_error` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommandError {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub code: u16,
    pub message: &'static str,
    pub details: String,
}

impl CommandError {
    /// What IPA makes of any exception that is not one of its own errors.
    pub fn execution(details: impl Into<String>) -> Self {
        CommandError {
            kind: "CommandExecutionError",
            code: 500,
            message: "Command execution failed",
            details: details.into(),
        }
    }

    /// A step no hardware manager has.
    fn method_not_found(method: &str) -> Self {
        CommandError {
            kind: "HardwareManagerMethodNotFound",
            code: 500,
            message: "No HardwareManager found to handle method",
            details: format!("Could not find method: {method}"),
        }
    }

    fn invalid_params(details: String) -> Self {
        CommandError {
            kind: "InvalidCommandParamsError",
            code: 400,
            message: "Invalid command parameters",
            details,
        }
    }

    fn version_mismatch(sent: &Value) -> Self {
        CommandError {
            kind: "VersionMismatch",
            code: 409,
            message: "Hardware managers version mismatch, reload agent with correct version",
            details: format!(
                "Current versions: {}, versions used by ironic: {sent}",
                manager_versions()
            ),
        }
    }

    /// An unexpected exception inside a step, as the step's extension wraps it.
    fn step_failed(kind: StepKind, details: String) -> Self {
        let (kind, message) = match kind {
            StepKind::Clean => ("CleaningError", "Clean step failed"),
            StepKind::Deploy => ("DeploymentError", "Deploy step failed"),
            StepKind::Service => ("ServicingError", "Service step failed"),
        };
        CommandError {
            kind,
            code: 500,
            message,
            details,
        }
    }
}

/// An HTTP error answer of the API: its status and the WSME-style body IPA sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub status: u16,
    /// `str()` of the error: werkzeug's `"<code> <reason>: <description>"` or IPA's
    /// `"<message>: <details>"`.
    pub text: String,
}

impl Fault {
    /// `{"faultcode": "Client"|"Server", "faultstring": ...}`.
    pub fn body(&self) -> Value {
        let code = if self.status >= 500 {
            "Server"
        } else {
            "Client"
        };
        json!({ "faultcode": code, "faultstring": self.text })
    }

    pub fn unauthorized() -> Self {
        Fault {
            status: 401,
            text: "401 Unauthorized: Token invalid.".into(),
        }
    }

    pub fn bad_request(description: &str) -> Self {
        Fault {
            status: 400,
            text: format!("400 Bad Request: {description}"),
        }
    }

    pub fn method_not_allowed() -> Self {
        Fault {
            status: 405,
            text: "405 Method Not Allowed: The method is not allowed for the requested URL.".into(),
        }
    }

    pub fn too_large() -> Self {
        Fault {
            status: 413,
            text: "413 Request Entity Too Large: The data value transmitted exceeds the capacity limit."
                .into(),
        }
    }

    /// IPA's `AgentIsBusy`, naming the running command by its short name.
    pub fn busy(running: &str) -> Self {
        Fault {
            status: 409,
            text: format!("Agent is busy: executing command {running}"),
        }
    }

    fn invalid_command(details: &str) -> Self {
        Fault {
            status: 400,
            text: format!("Invalid command: {details}"),
        }
    }

    fn invalid_params(details: &str) -> Self {
        Fault {
            status: 400,
            text: format!("Invalid command parameters: {details}"),
        }
    }

    /// IPA's `RequestedObjectNotFoundError` (an unknown extension or command id).
    pub fn not_found(what: &str, id: &str) -> Self {
        Fault {
            status: 404,
            text: format!("Not found: {what} with id {id} not found."),
        }
    }
}

/// The three kinds of steps IPA runs, each with its own extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    Clean,
    Deploy,
    Service,
}

impl StepKind {
    /// The extension's name, also the prefix of its keys (`clean_steps`, `clean_result`).
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Clean => "clean",
            StepKind::Deploy => "deploy",
            StepKind::Service => "service",
        }
    }

    /// The parameter carrying the hardware manager versions Ironic saw.
    fn version_param(self) -> &'static str {
        match self {
            StepKind::Clean => "clean_version",
            StepKind::Deploy => "deploy_version",
            StepKind::Service => "service_version",
        }
    }

    /// The generic hardware manager's steps of this kind, as `get_<kind>_steps` lists them.
    pub fn steps(self) -> Vec<Value> {
        let table: &[Step] = match self {
            StepKind::Clean => CLEAN_STEPS,
            StepKind::Deploy => DEPLOY_STEPS,
            StepKind::Service => SERVICE_STEPS,
        };
        table.iter().map(Step::to_json).collect()
    }

    fn has_step(self, name: &str) -> bool {
        self.steps().iter().any(|s| s["step"] == name)
    }
}

/// One step of the generic hardware manager.
struct Step {
    step: &'static str,
    priority: u32,
    interface: &'static str,
    /// Deploy steps carry no `abortable`.
    abortable: Option<bool>,
    argsinfo: Option<fn() -> Value>,
}

impl Step {
    fn to_json(&self) -> Value {
        let mut v = json!({
            "step": self.step,
            "priority": self.priority,
            "interface": self.interface,
            "reboot_requested": false,
        });
        if let Some(a) = self.abortable {
            v["abortable"] = json!(a);
        }
        if let Some(args) = self.argsinfo {
            v["argsinfo"] = args();
        }
        v
    }
}

/// A step of cleaning or servicing (abortable).
const fn abortable(step: &'static str, priority: u32, interface: &'static str) -> Step {
    Step {
        step,
        priority,
        interface,
        abortable: Some(true),
        argsinfo: None,
    }
}

/// A step without `abortable`, with its arguments' descriptions if any.
const fn plain(
    step: &'static str,
    interface: &'static str,
    argsinfo: Option<fn() -> Value>,
) -> Step {
    Step {
        step,
        priority: 0,
        interface,
        abortable: None,
        argsinfo,
    }
}

fn raid_argsinfo() -> Value {
    json!({
        "raid_config": {"description": "The RAID configuration to apply.", "required": true},
        "delete_existing": {
            "description": "Setting this to 'True' indicates to delete existing RAID configuration prior to creating the new configuration. Default value is 'True'.",
            "required": false,
        },
    })
}

fn nvram_argsinfo() -> Value {
    json!({"match_patterns": {
        "description": "Json blob contains a list of regex patterns where any UEFI NVRAM entry matching that pattern will be deleted. Default value is '[\"^HD\\(\", \"shim.*\\.efi\", \"grub.*\\.efi\"]'",
        "required": false,
    }})
}

fn inject_files_argsinfo() -> Value {
    json!({
        "files": {
            "description": "Files to inject, a list of file structures with keys: 'path' (path to the file), 'partition' (partition specifier), 'content' (base64 encoded string), 'mode' (new file mode) and 'dirmode' (mode for the leaf directory, if created). Merged with the values from node.properties[inject_files].",
            "required": false,
        },
        "verify_ca": {
            "description": "Whether to verify TLS certificates. Global agent options are used by default.",
            "required": false,
        },
    })
}

/// IPA's generic clean steps, in its order.
const CLEAN_STEPS: &[Step] = &[
    abortable("erase_devices", 10, "deploy"),
    abortable("erase_devices_metadata", 99, "deploy"),
    abortable("erase_devices_express", 0, "deploy"),
    abortable("erase_pstore", 0, "deploy"),
    Step {
        argsinfo: Some(nvram_argsinfo),
        ..abortable("clean_uefi_nvram", 0, "deploy")
    },
    abortable("delete_configuration", 0, "raid"),
    abortable("create_configuration", 0, "raid"),
    abortable("burnin_cpu", 0, "deploy"),
    abortable("burnin_gpu", 0, "deploy"),
    abortable("burnin_disk", 0, "deploy"),
    abortable("burnin_memory", 0, "deploy"),
    abortable("burnin_network", 0, "deploy"),
];

/// IPA's generic deploy steps (`inject_files` at its default priority, 0).
const DEPLOY_STEPS: &[Step] = &[
    plain("erase_devices_metadata", "deploy", None),
    plain("apply_configuration", "raid", Some(raid_argsinfo)),
    plain("clean_uefi_nvram", "deploy", Some(nvram_argsinfo)),
    plain("write_image", "deploy", None),
    plain("inject_files", "deploy", Some(inject_files_argsinfo)),
    plain("execute_bootc_install", "deploy", None),
];

/// IPA's generic service steps (no disk burn-in: it would destroy the instance's data).
const SERVICE_STEPS: &[Step] = &[
    abortable("delete_configuration", 0, "raid"),
    plain("apply_configuration", "raid", Some(raid_argsinfo)),
    abortable("create_configuration", 0, "raid"),
    abortable("burnin_cpu", 0, "deploy"),
    abortable("burnin_gpu", 0, "deploy"),
    abortable("burnin_memory", 0, "deploy"),
    abortable("burnin_network", 0, "deploy"),
    plain("write_image", "deploy", None),
    plain("inject_files", "deploy", Some(inject_files_argsinfo)),
    plain("execute_bootc_install", "deploy", None),
];

/// `hardware_manager_version`: the one manager's name and version.
pub fn manager_versions() -> Value {
    json!({ MANAGER_NAME: MANAGER_VERSION })
}

/// The commands the simulated agent knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    GetSteps(StepKind),
    ExecuteStep(StepKind),
    PrepareImage,
    RunImage,
    PowerOff,
    Sync,
    GetPartitionUuids,
    InstallBootloader,
    FinalizeRescue,
    Lockdown,
    CollectLogs,
    GetHardwareInfo,
}

impl Cmd {
    /// IPA's command `cmd` of extension `ext`: 404 for an unknown extension, 400 for an unknown
    /// command of a known one.
    fn lookup(ext: &str, cmd: &str) -> Result<Cmd, Fault> {
        let steps = |kind: StepKind| -> Option<Cmd> {
            let k = kind.as_str();
            if cmd == format!("get_{k}_steps") {
                Some(Cmd::GetSteps(kind))
            } else if cmd == format!("execute_{k}_step") {
                Some(Cmd::ExecuteStep(kind))
            } else {
                None
            }
        };
        let found = match ext {
            "clean" => steps(StepKind::Clean),
            "deploy" => steps(StepKind::Deploy),
            "service" => steps(StepKind::Service),
            "standby" => match cmd {
                "prepare_image" => Some(Cmd::PrepareImage),
                "run_image" => Some(Cmd::RunImage),
                "power_off" => Some(Cmd::PowerOff),
                "sync" => Some(Cmd::Sync),
                "get_partition_uuids" => Some(Cmd::GetPartitionUuids),
                _ => None,
            },
            "image" => (cmd == "install_bootloader").then_some(Cmd::InstallBootloader),
            "rescue" => (cmd == "finalize_rescue").then_some(Cmd::FinalizeRescue),
            "system" => (cmd == "lockdown").then_some(Cmd::Lockdown),
            "log" => (cmd == "collect_system_logs").then_some(Cmd::CollectLogs),
            "poll" => (cmd == "get_hardware_info").then_some(Cmd::GetHardwareInfo),
            // IPA has it; the simulator runs no flows.
            "flow" => None,
            _ => return Err(Fault::not_found("Extension", ext)),
        };
        found.ok_or_else(|| Fault::invalid_command(&format!("Unknown command: {cmd}")))
    }

    fn is_async(self) -> bool {
        matches!(
            self,
            Cmd::ExecuteStep(_)
                | Cmd::PrepareImage
                | Cmd::RunImage
                | Cmd::PowerOff
                | Cmd::InstallBootloader
        )
    }
}

/// What an image written by the run left on the disk, for `get_partition_uuids`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// A partition image (`image_type: partition`), else a whole-disk image.
    pub partition: bool,
    /// Deployed for UEFI boot (`deploy_boot_mode`, UEFI unless `bios`): a partition image then
    /// gets an EFI system partition.
    pub uefi: bool,
}

/// What a finished command does to the machine or the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    None,
    /// `standby.power_off`: the machine powers off.
    PowerOff,
    /// `standby.run_image`: the machine reboots.
    Reboot,
    /// An image was written (remembered for `get_partition_uuids`).
    Wrote(Written),
}

/// How a command ends: set at once for a synchronous command, when its time is up for an
/// asynchronous one.
#[derive(Debug, Clone, PartialEq)]
struct Outcome {
    status: Status,
    error: Option<CommandError>,
    result: Value,
    effect: Effect,
}

impl Outcome {
    fn ok(result: Value) -> Self {
        Outcome {
            status: Status::Succeeded,
            error: None,
            result,
            effect: Effect::None,
        }
    }

    fn failed(error: CommandError) -> Self {
        Outcome {
            status: Status::Failed,
            error: Some(error),
            result: Value::Null,
            effect: Effect::None,
        }
    }

    fn with(self, effect: Effect) -> Self {
        Outcome { effect, ..self }
    }
}

/// One command of the run.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub id: String,
    /// The short name (`execute_deploy_step`).
    pub name: String,
    /// `command_name` as IPA shows it: the short name, or the full one for a failed
    /// synchronous command.
    shown_name: String,
    /// `interface.step` of an `execute_*_step`.
    pub step: Option<String>,
    pub status: Status,
    error: Option<CommandError>,
    result: Value,
    /// How a running asynchronous command will end.
    pending: Option<Outcome>,
}

impl Command {
    /// The command's JSON, as every answer of the API shows it.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "command_name": self.shown_name,
            "command_status": self.status,
            "command_error": self.error,
            "command_result": self.result,
        })
    }

    fn apply(&mut self, o: Outcome) {
        self.status = o.status;
        self.error = o.error;
        self.result = o.result;
    }
}

/// A command as the control API's agent view lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommandFact {
    pub id: String,
    pub name: String,
    pub step: Option<String>,
    pub status: Status,
}

/// What the run's configuration and machine give a command.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub system: &'a str,
    pub idx: usize,
    /// A command whose short name, or (for `execute_*_step`) whose step, is this fails.
    pub fail_command: Option<&'a str>,
}

/// A command the run accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub id: String,
    /// Runs until [`Commands::finish`]; a synchronous one is done already.
    pub is_async: bool,
    /// The agent exits now that this command is answered (`finalize_rescue`, `lockdown`).
    pub ends_run: bool,
}

/// The commands of one agent run, in issue order.
#[derive(Debug, Clone, Default)]
pub struct Commands {
    list: Vec<Command>,
    written: Option<Written>,
}

impl Commands {
    /// How many commands the run accepted.
    pub fn accepted(&self) -> usize {
        self.list.len()
    }

    pub fn get(&self, id: &str) -> Option<&Command> {
        self.list.iter().find(|c| c.id == id)
    }

    /// `{"commands": [...]}` in issue order.
    pub fn list_json(&self) -> Value {
        json!({ "commands": self.list.iter().map(Command::to_json).collect::<Vec<_>>() })
    }

    pub fn facts(&self) -> Vec<CommandFact> {
        self.list
            .iter()
            .map(|c| CommandFact {
                id: c.id.clone(),
                name: c.name.clone(),
                step: c.step.clone(),
                status: c.status,
            })
            .collect()
    }

    /// Runs command `name` (`extension.command`) with `params` as IPA does, under id `id`: a
    /// [`Fault`] when IPA refuses it (nothing is recorded then), else the accepted command
    /// (failed ones included: IPA answers those 200).
    pub fn post(
        &mut self,
        name: &str,
        params: &Map<String, Value>,
        id: String,
        ctx: Context<'_>,
    ) -> Result<Accepted, Fault> {
        let Some((ext, short)) = name.split_once('.') else {
            return Err(Fault::invalid_command(
                "Command name must be of the form <extension>.<name>",
            ));
        };
        if let Some(last) = self.list.last().filter(|c| c.status == Status::Running) {
            return Err(Fault::busy(&last.name));
        }
        let cmd = Cmd::lookup(ext, short)?;
        if cmd == Cmd::PrepareImage {
            // IPA validates before it starts the command: a refusal, not a failed command.
            validate_image_info(params.get("image_info")).map_err(|e| Fault::invalid_params(&e))?;
        }
        let outcome = self.outcome(cmd, short, params, ctx);
        let step = step_label(cmd, params);
        let mut command = Command {
            id: id.clone(),
            name: short.to_string(),
            shown_name: short.to_string(),
            step,
            status: Status::Running,
            error: None,
            result: Value::Null,
            pending: None,
        };
        let is_async = cmd.is_async();
        let mut ends_run = false;
        if is_async {
            command.pending = Some(outcome);
        } else {
            if outcome.status == Status::Failed {
                command.shown_name = name.to_string();
            }
            ends_run = outcome.status == Status::Succeeded
                && matches!(cmd, Cmd::FinalizeRescue | Cmd::Lockdown);
            command.apply(outcome);
        }
        self.list.push(command);
        Ok(Accepted {
            id,
            is_async,
            ends_run,
        })
    }

    /// Ends running asynchronous command `id` as it was set to end. Returns what it does to the
    /// machine, or `None` when there is no such running command.
    pub fn finish(&mut self, id: &str) -> Option<Effect> {
        let c = self
            .list
            .iter_mut()
            .find(|c| c.id == id && c.status == Status::Running)?;
        let outcome = c.pending.take()?;
        let effect = outcome.effect.clone();
        c.apply(outcome);
        Some(match effect {
            Effect::Wrote(w) => {
                self.written = Some(w);
                Effect::None
            }
            other => other,
        })
    }

    /// How command `cmd` (short name `short`) ends.
    fn outcome(
        &self,
        cmd: Cmd,
        short: &str,
        params: &Map<String, Value>,
        ctx: Context<'_>,
    ) -> Outcome {
        let required: &[&str] = match cmd {
            Cmd::GetSteps(_) => &["node", "ports"],
            Cmd::ExecuteStep(_) => &["step", "node", "ports"],
            Cmd::InstallBootloader => &["root_uuid"],
            _ => &[],
        };
        if let Some(e) = missing_arguments(short, params, required) {
            return Outcome::failed(CommandError::execution(e));
        }
        // IPA 13's signatures without `**kwargs`: any other argument is Python's TypeError.
        let accepted: Option<&[&str]> = match cmd {
            Cmd::GetSteps(_) => Some(&["node", "ports"]),
            Cmd::InstallBootloader => Some(&[
                "root_uuid",
                "efi_system_part_uuid",
                "prep_boot_part_uuid",
                "target_boot_mode",
                "ignore_bootloader_failure",
            ]),
            Cmd::PowerOff | Cmd::Sync | Cmd::GetPartitionUuids | Cmd::Lockdown => Some(&[]),
            Cmd::FinalizeRescue => Some(&["rescue_password", "hashed"]),
            _ => None,
        };
        if let Some(unexpected) =
            accepted.and_then(|a| params.keys().find(|k| !a.contains(&k.as_str())))
        {
            return Outcome::failed(CommandError::execution(format!(
                "{short}() got an unexpected keyword argument '{unexpected}'"
            )));
        }
        if ctx.fail_command == Some(short) {
            return Outcome::failed(CommandError::execution(format!(
                "simulated failure of {short}"
            )));
        }
        match cmd {
            Cmd::GetSteps(kind) => Outcome::ok(json!({
                format!("{}_steps", kind.as_str()): { MANAGER_CLASS: kind.steps() },
                "hardware_manager_version": manager_versions(),
            })),
            Cmd::ExecuteStep(kind) => execute_step(kind, params, ctx),
            Cmd::PrepareImage => {
                let info = params.get("image_info").cloned().unwrap_or(Value::Null);
                let written = written_by(&info);
                Outcome::ok(json!({ "result": format!(
                    "prepare_image: {}",
                    written_message(&info, &written, ctx.idx)
                ) }))
                .with(Effect::Wrote(written))
            }
            Cmd::RunImage => Outcome::ok(Value::Null).with(Effect::Reboot),
            Cmd::PowerOff => Outcome::ok(Value::Null).with(Effect::PowerOff),
            Cmd::Sync | Cmd::InstallBootloader | Cmd::Lockdown => Outcome::ok(Value::Null),
            Cmd::GetPartitionUuids => Outcome::ok(partition_uuids(self.written.as_ref(), ctx.idx)),
            Cmd::FinalizeRescue => match params.get("rescue_password") {
                Some(Value::String(p)) if !p.is_empty() => Outcome::ok(Value::Null),
                _ => Outcome::failed(CommandError::execution(
                    "finalize_rescue requires a non-empty rescue_password",
                )),
            },
            Cmd::CollectLogs => Outcome::ok(json!({ "system_logs": system_logs(ctx.system) })),
            Cmd::GetHardwareInfo => Outcome::ok(hardware::inventory(ctx.system, ctx.idx)),
        }
    }
}

/// How `<kind>.execute_<kind>_step` ends.
fn execute_step(kind: StepKind, params: &Map<String, Value>, ctx: Context<'_>) -> Outcome {
    let k = kind.as_str();
    let step = params.get("step").unwrap_or(&Value::Null);
    let Some(name) = step.get("step").and_then(Value::as_str) else {
        return Outcome::failed(CommandError::execution(format!(
            "Malformed {k}_step, no \"step\" key: {step}"
        )));
    };
    if ctx.fail_command == Some(name) {
        return Outcome::failed(CommandError::execution(format!(
            "simulated failure of {name}"
        )));
    }
    match params.get(kind.version_param()) {
        None | Some(Value::Null) => {}
        Some(sent) if *sent == manager_versions() => {}
        Some(sent) => {
            return Outcome {
                status: Status::VersionMismatch,
                error: Some(CommandError::version_mismatch(sent)),
                result: Value::Null,
                effect: Effect::None,
            }
        }
    }
    if !kind.has_step(name) {
        return Outcome::failed(CommandError::method_not_found(name));
    }
    let done = |result: Value| json!({ format!("{k}_result"): result, format!("{k}_step"): step });
    if name != "write_image" {
        return Outcome::ok(done(Value::Null));
    }
    // IPA's write_image proxies to standby.prepare_image and returns its result.
    let Some(info) = step.get("args").and_then(|a| a.get("image_info")) else {
        return Outcome::failed(CommandError::step_failed(
            kind,
            format!(
                "Unexpected exception performing {k} step write_image. TypeError: write_image() missing 1 required positional argument: 'image_info'"
            ),
        ));
    };
    if let Err(e) = validate_image_info(Some(info)) {
        return Outcome::failed(CommandError::invalid_params(e));
    }
    let written = written_by(info);
    let message = written_message(info, &written, ctx.idx);
    Outcome::ok(done(
        json!({ "result": format!("prepare_image: {message}") }),
    ))
    .with(Effect::Wrote(written))
}

/// `interface.step` of an `execute_*_step` command, for the log and the view.
fn step_label(cmd: Cmd, params: &Map<String, Value>) -> Option<String> {
    if !matches!(cmd, Cmd::ExecuteStep(_)) {
        return None;
    }
    step_of(params.get("step")?)
}

/// `interface.step` (or just `step`) of a step object.
pub fn step_of(step: &Value) -> Option<String> {
    let name = step.get("step")?.as_str()?;
    Some(match step.get("interface").and_then(Value::as_str) {
        Some(i) => format!("{i}.{name}"),
        None => name.to_string(),
    })
}

/// Python's complaint about missing keyword arguments of `func`, if any are missing.
fn missing_arguments(func: &str, params: &Map<String, Value>, required: &[&str]) -> Option<String> {
    let missing: Vec<String> = required
        .iter()
        .filter(|r| !params.contains_key(**r))
        .map(|r| format!("'{r}'"))
        .collect();
    let names = match missing.as_slice() {
        [] => return None,
        [one] => one.clone(),
        [a, b] => format!("{a} and {b}"),
        [init @ .., last] => format!("{}, and {last}", init.join(", ")),
    };
    let plural = if missing.len() == 1 { "" } else { "s" };
    Some(format!(
        "{func}() missing {} required positional argument{plural}: {names}",
        missing.len()
    ))
}

/// IPA's checks of `image_info` (standby's `_validate_image_info`): its error text, if any.
fn validate_image_info(info: Option<&Value>) -> Result<(), String> {
    let empty = Map::new();
    let info = info.and_then(Value::as_object).unwrap_or(&empty);
    for field in ["id", "urls"] {
        if !info.contains_key(field) {
            return Err(format!("Image is missing '{field}' field."));
        }
    }
    if info["urls"].as_array().is_none_or(|u| u.is_empty()) {
        return Err("Image 'urls' must be a list with at least one element.".into());
    }
    match info.get("checksum") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) if !s.is_empty() => Ok(()),
        Some(_) => Err("Image 'checksum' must be a non-empty string.".into()),
    }
}

/// What writing image `info` leaves on the disk.
fn written_by(info: &Value) -> Written {
    Written {
        partition: info.get("image_type").and_then(Value::as_str) == Some("partition"),
        uefi: info.get("deploy_boot_mode").and_then(Value::as_str) != Some("bios"),
    }
}

/// The disk identifier of system `idx`'s root disk (`0x` and 8 hex digits, never zero: IPA
/// reads `0x00000000` as "no root uuid").
pub fn disk_identifier(idx: usize) -> String {
    format!("0xfe{:06x}", idx & 0xff_ffff)
}

/// The uuid of system `idx`'s root partition (of a partition image).
fn root_partition_uuid(idx: usize) -> String {
    format!("0f5e0f5e-0000-4000-8000-{idx:012x}")
}

/// The uuid of system `idx`'s EFI system partition (of a partition image).
pub fn efi_partition_uuid(idx: usize) -> String {
    format!("ef1ef1ef-0000-4000-8000-{idx:012x}")
}

/// `get_partition_uuids` after `written`: `{}` before an image was written (IPA), the disk
/// identifier for a whole-disk image, the partitions of a partition image.
fn partition_uuids(written: Option<&Written>, idx: usize) -> Value {
    match written {
        None => json!({}),
        Some(w) if !w.partition => json!({ "root uuid": disk_identifier(idx) }),
        Some(w) if w.uefi => json!({
            "partitions": {
                "efi system partition": format!("{ROOT_DEVICE}1"),
                "root": format!("{ROOT_DEVICE}2"),
            },
            "root uuid": root_partition_uuid(idx),
            "efi system partition uuid": efi_partition_uuid(idx),
        }),
        Some(_) => json!({
            "partitions": { "root": format!("{ROOT_DEVICE}1") },
            "root uuid": root_partition_uuid(idx),
            "efi system partition uuid": null,
        }),
    }
}

/// `prepare_image`'s message: `image (<id>) written to device /dev/sda root_uuid=...`, with the
/// EFI partition's uuid when there is one and the boot mode is UEFI.
fn written_message(info: &Value, w: &Written, idx: usize) -> String {
    let id = match &info["id"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let uuids = partition_uuids(Some(w), idx);
    let root = uuids["root uuid"].as_str().unwrap_or_default();
    let head = format!("image ({id}) written to device {ROOT_DEVICE} root_uuid={root}");
    let uefi_mode = info.get("deploy_boot_mode").and_then(Value::as_str) == Some("uefi");
    match uuids["efi system partition uuid"].as_str() {
        Some(efi) if uefi_mode => format!("{head} efi_system_partition_uuid={efi}"),
        _ => head,
    }
}

/// `collect_system_logs`' payload: base64 text (not a real tarball; nobody unpacks it here).
fn system_logs(system: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!(
        "ferric-sim: the ramdisk of {system} keeps no logs\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CTX: Context<'static> = Context {
        system: "sim-3",
        idx: 3,
        fail_command: None,
    };

    fn params(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    fn post(c: &mut Commands, name: &str, p: Value) -> Result<Accepted, Fault> {
        let id = format!("id-{}", c.accepted());
        c.post(name, &params(p), id, CTX)
    }

    fn step_params(step: Value) -> Value {
        json!({"step": step, "node": {"uuid": "n"}, "ports": [], "deploy_version": manager_versions()})
    }

    #[test]
    fn sync_commands_answer_ipa_shapes() {
        let mut c = Commands::default();
        let a = post(
            &mut c,
            "clean.get_clean_steps",
            json!({"node": {}, "ports": []}),
        )
        .unwrap();
        assert!(!a.is_async);
        let v = c.get(&a.id).unwrap().to_json();
        assert_eq!(v["command_name"], "get_clean_steps");
        assert_eq!(v["command_status"], "SUCCEEDED");
        assert_eq!(v["command_error"], Value::Null);
        assert_eq!(
            v["command_result"]["hardware_manager_version"],
            json!({"generic_hardware_manager": "1.2"})
        );
        let steps = v["command_result"]["clean_steps"]["GenericHardwareManager"]
            .as_array()
            .unwrap();
        let find = |n: &str| steps.iter().find(|s| s["step"] == n).unwrap().clone();
        assert_eq!(
            find("erase_devices"),
            json!({"step": "erase_devices", "priority": 10, "interface": "deploy",
                   "reboot_requested": false, "abortable": true})
        );
        assert_eq!(find("erase_devices_metadata")["priority"], 99);
        assert_eq!(find("create_configuration")["interface"], "raid");
        for s in [
            "erase_pstore",
            "burnin_cpu",
            "burnin_memory",
            "burnin_disk",
            "burnin_network",
        ] {
            assert_eq!(find(s)["priority"], 0, "{s}");
        }
        let deploy = StepKind::Deploy.steps();
        let write = deploy.iter().find(|s| s["step"] == "write_image").unwrap();
        assert!(write.get("abortable").is_none());
        let apply = deploy
            .iter()
            .find(|s| s["step"] == "apply_configuration")
            .unwrap();
        assert_eq!(apply["argsinfo"]["raid_config"]["required"], true);
        assert!(!StepKind::Service.has_step("burnin_disk"));

        let a = post(&mut c, "standby.sync", json!({})).unwrap();
        assert_eq!(
            c.get(&a.id).unwrap().to_json()["command_result"],
            Value::Null
        );
        let a = post(&mut c, "log.collect_system_logs", json!({})).unwrap();
        assert!(c.get(&a.id).unwrap().result["system_logs"].is_string());
        assert_eq!(c.list_json()["commands"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn async_commands_run_one_at_a_time_and_end_as_set() {
        let mut c = Commands::default();
        let step = json!({"step": "write_image", "interface": "deploy", "priority": 0,
            "args": {"image_info": {"id": "img", "urls": ["http://i/img"]}}});
        let a = post(
            &mut c,
            "deploy.execute_deploy_step",
            step_params(step.clone()),
        )
        .unwrap();
        assert!(a.is_async && !a.ends_run);
        let running = c.get(&a.id).unwrap();
        assert_eq!(running.status, Status::Running);
        assert_eq!(running.step.as_deref(), Some("deploy.write_image"));
        assert_eq!(running.to_json()["command_result"], Value::Null);
        let busy = post(&mut c, "standby.sync", json!({})).unwrap_err();
        assert_eq!(
            (busy.status, busy.body()),
            (
                409,
                json!({"faultcode": "Client",
                "faultstring": "Agent is busy: executing command execute_deploy_step"})
            )
        );
        assert_eq!(c.accepted(), 1, "a refusal records nothing");
        assert_eq!(c.finish(&a.id), Some(Effect::None));
        assert_eq!(c.finish(&a.id), None, "finishes once");
        let v = c.get(&a.id).unwrap().to_json();
        assert_eq!(v["command_status"], "SUCCEEDED");
        assert_eq!(v["command_result"]["deploy_step"], step);
        assert_eq!(
            v["command_result"]["deploy_result"]["result"],
            "prepare_image: image (img) written to device /dev/sda root_uuid=0xfe000003"
        );
        let a = post(&mut c, "standby.get_partition_uuids", json!({})).unwrap();
        assert_eq!(
            c.get(&a.id).unwrap().result,
            json!({"root uuid": "0xfe000003"})
        );
        let a = post(&mut c, "standby.power_off", json!({})).unwrap();
        assert_eq!(c.finish(&a.id), Some(Effect::PowerOff));
        let a = post(&mut c, "standby.run_image", json!({})).unwrap();
        assert_eq!(c.finish(&a.id), Some(Effect::Reboot));
    }

    #[test]
    fn partition_uuids_follow_the_written_image() {
        let mut c = Commands::default();
        let a = post(&mut c, "standby.get_partition_uuids", json!({})).unwrap();
        assert_eq!(
            c.get(&a.id).unwrap().result,
            json!({}),
            "nothing written yet"
        );
        let info = json!({"id": "p", "urls": ["u"], "image_type": "partition",
                          "deploy_boot_mode": "uefi"});
        let a = post(&mut c, "standby.prepare_image", json!({"image_info": info})).unwrap();
        c.finish(&a.id);
        assert_eq!(
            c.get(&a.id).unwrap().result["result"],
            format!("prepare_image: image (p) written to device /dev/sda root_uuid={} efi_system_partition_uuid={}",
                root_partition_uuid(3), efi_partition_uuid(3))
        );
        let a = post(&mut c, "standby.get_partition_uuids", json!({})).unwrap();
        let r = &c.get(&a.id).unwrap().result;
        assert_eq!(r["efi system partition uuid"], efi_partition_uuid(3));
        assert_eq!(r["partitions"]["root"], "/dev/sda2");
    }

    #[test]
    fn unknown_and_malformed_commands_are_refused_as_ipa_does() {
        let mut c = Commands::default();
        let f = post(&mut c, "nosuch.thing", json!({})).unwrap_err();
        assert_eq!(
            (f.status, f.text.as_str()),
            (404, "Not found: Extension with id nosuch not found.")
        );
        let f = post(&mut c, "standby.reboot", json!({})).unwrap_err();
        assert_eq!(
            (f.status, f.text.as_str()),
            (400, "Invalid command: Unknown command: reboot")
        );
        let f = post(&mut c, "sync", json!({})).unwrap_err();
        assert_eq!(f.status, 400);
        let f = post(
            &mut c,
            "standby.prepare_image",
            json!({"image_info": {"id": "x"}}),
        )
        .unwrap_err();
        assert_eq!(
            f.text,
            "Invalid command parameters: Image is missing 'urls' field."
        );
        assert_eq!(c.accepted(), 0);
        // Accepted, then failed: missing arguments, as Python says it.
        let a = post(&mut c, "clean.execute_clean_step", json!({"node": {}})).unwrap();
        c.finish(&a.id);
        let e = c.get(&a.id).unwrap().error.clone().unwrap();
        assert_eq!(
            e.details,
            "execute_clean_step() missing 2 required positional arguments: 'step' and 'ports'"
        );
        // A failed sync command is named by its full name.
        let a = post(&mut c, "rescue.finalize_rescue", json!({"hashed": true})).unwrap();
        assert!(!a.ends_run);
        let v = c.get(&a.id).unwrap().to_json();
        assert_eq!(v["command_name"], "rescue.finalize_rescue");
        assert_eq!(v["command_status"], "FAILED");
        assert_eq!(v["command_error"]["type"], "CommandExecutionError");
        assert_eq!(v["command_error"]["code"], 500);
        assert_eq!(v["command_error"]["message"], "Command execution failed");
        let a = post(
            &mut c,
            "rescue.finalize_rescue",
            json!({"rescue_password": "x", "hashed": true}),
        )
        .unwrap();
        assert!(a.ends_run);
        assert_eq!(
            c.get(&a.id).unwrap().to_json()["command_name"],
            "finalize_rescue"
        );
    }

    #[test]
    fn steps_fail_when_unknown_mismatched_or_without_an_image() {
        let mut c = Commands::default();
        let mut run = |p: Value| {
            let a = post(&mut c, "deploy.execute_deploy_step", p).unwrap();
            c.finish(&a.id);
            c.get(&a.id).unwrap().to_json()
        };
        let v = run(step_params(json!({"step": "dance", "interface": "deploy"})));
        assert_eq!(v["command_status"], "FAILED");
        assert_eq!(
            v["command_error"]["details"],
            "Could not find method: dance"
        );
        let v = run(step_params(
            json!({"step": "write_image", "interface": "deploy"}),
        ));
        assert_eq!(v["command_error"]["type"], "DeploymentError");
        assert!(v["command_error"]["details"]
            .as_str()
            .unwrap()
            .contains("image_info"));
        let v = run(step_params(
            json!({"step": "write_image", "interface": "deploy",
            "args": {"image_info": {"id": "i", "urls": []}}}),
        ));
        assert_eq!(
            v["command_error"]["details"],
            "Image 'urls' must be a list with at least one element."
        );
        let mut p = step_params(json!({"step": "write_image"}));
        p["deploy_version"] = json!({"generic_hardware_manager": "1.1"});
        let v = run(p);
        assert_eq!(v["command_status"], "CLEAN_VERSION_MISMATCH");
        assert_eq!(v["command_error"]["code"], 409);
    }

    #[test]
    fn fail_command_matches_a_short_name_or_a_step() {
        let fail = |what: &'static str, name: &str, p: Value| {
            let mut c = Commands::default();
            let ctx = Context {
                fail_command: Some(what),
                ..CTX
            };
            let a = c.post(name, &params(p), "x".into(), ctx).unwrap();
            c.finish(&a.id);
            c.get("x").unwrap().to_json()
        };
        let erase = json!({"step": "erase_devices", "interface": "deploy"});
        let p = json!({"step": erase, "node": {}, "ports": []});
        let v = fail("erase_devices", "clean.execute_clean_step", p.clone());
        assert_eq!(v["command_status"], "FAILED");
        assert_eq!(
            v["command_error"]["details"],
            "simulated failure of erase_devices"
        );
        let v = fail("execute_clean_step", "clean.execute_clean_step", p.clone());
        assert_eq!(
            v["command_error"]["details"],
            "simulated failure of execute_clean_step"
        );
        let v = fail("erase_pstore", "clean.execute_clean_step", p);
        assert_eq!(v["command_status"], "SUCCEEDED", "another step runs");
        let v = fail("sync", "standby.sync", json!({}));
        assert_eq!(
            (v["command_status"].clone(), v["command_name"].clone()),
            (json!("FAILED"), json!("standby.sync"))
        );
        let v = fail("power_off", "standby.power_off", json!({}));
        assert_eq!(v["command_status"], "FAILED");
    }

    #[test]
    fn faults_have_wsme_bodies() {
        assert_eq!(
            Fault::unauthorized().body(),
            json!({"faultcode": "Client", "faultstring": "401 Unauthorized: Token invalid."})
        );
        assert_eq!(
            Fault::bad_request("Missing or invalid name or params").text,
            "400 Bad Request: Missing or invalid name or params"
        );
        assert_eq!(
            Fault {
                status: 500,
                text: "x".into()
            }
            .body()["faultcode"],
            "Server"
        );
    }
}
