//! One simulated machine behind its BMC: power, boot override, behaviour, the pending graceful
//! operation and the current boot ([`Run`]), with its transitions as synchronous functions over
//! plain data (no I/O, no clock reads: the caller passes `now` and arms the timers a transition
//! asks for).
//!
//! The parts that live inside the machine (the deploy agent, the serial port) hang off `System` as
//! further fields. Transitions only change the run; the fleet compares the run before and after
//! each transition and tells those parts (`SimState::transition`), so no transition can forget to.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::agent::Agent;
use crate::config::Behaviour;
use crate::rng::Rng;
use crate::serial::SerialPort;

/// Redfish `PowerState`. The simulator always knows it: there is no "unknown" here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Power {
    On,
    Off,
}

impl Power {
    pub fn as_str(self) -> &'static str {
        match self {
            Power::On => "On",
            Power::Off => "Off",
        }
    }
}

/// Redfish `ResetType` values the simulator accepts (and lists in `@Redfish.AllowableValues`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetType {
    On,
    ForceOff,
    GracefulShutdown,
    GracefulRestart,
    ForceRestart,
    ForceOn,
    Nmi,
    PushPowerButton,
}

impl ResetType {
    pub const ALL: [ResetType; 8] = [
        ResetType::On,
        ResetType::ForceOff,
        ResetType::GracefulShutdown,
        ResetType::GracefulRestart,
        ResetType::ForceRestart,
        ResetType::ForceOn,
        ResetType::Nmi,
        ResetType::PushPowerButton,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ResetType::On => "On",
            ResetType::ForceOff => "ForceOff",
            ResetType::GracefulShutdown => "GracefulShutdown",
            ResetType::GracefulRestart => "GracefulRestart",
            ResetType::ForceRestart => "ForceRestart",
            ResetType::ForceOn => "ForceOn",
            ResetType::Nmi => "Nmi",
            ResetType::PushPowerButton => "PushPowerButton",
        }
    }

    /// Exact, case-sensitive match, as Redfish enumerations are.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// Declares a Redfish string enumeration with its exact wire names.
macro_rules! redfish_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $wire:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
        pub enum $name {
            $(#[serde(rename = $wire)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire),+
                }
            }

            /// Exact, case-sensitive match, as Redfish enumerations are.
            pub fn parse(s: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str() == s)
            }
        }
    };
}

redfish_enum!(
    /// `Boot.BootSourceOverrideTarget`.
    BootTarget { None => "None", Pxe => "Pxe", Hdd => "Hdd", Cd => "Cd", BiosSetup => "BiosSetup" }
);
redfish_enum!(
    /// `Boot.BootSourceOverrideEnabled`.
    BootEnabled { Disabled => "Disabled", Once => "Once", Continuous => "Continuous" }
);
redfish_enum!(
    /// `Boot.BootSourceOverrideMode` (sushy sends it when Ironic sets a boot mode).
    BootMode { Uefi => "UEFI", Legacy => "Legacy" }
);

/// The boot override as the BMC reports it. A `Once` override is consumed by the next boot, as
/// DMTF Redfish says: `BootSourceOverrideEnabled` goes back to `Disabled` (the target stays as it
/// was, as on most BMCs). A target with `Disabled` is not an override.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Boot {
    pub target: BootTarget,
    pub enabled: BootEnabled,
    pub mode: BootMode,
}

impl Default for Boot {
    fn default() -> Self {
        Boot {
            target: BootTarget::None,
            enabled: BootEnabled::Disabled,
            mode: BootMode::Uefi,
        }
    }
}

/// What the "OS" is doing after a graceful request: it completes at `due`, or never (`None`) when
/// the system's graceful time is "never". While one is pending the power stays `On`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    pub kind: PendingKind,
    pub due: Option<Instant>,
    /// Matches the timer armed for this operation; a timer whose token is stale does nothing, so
    /// a ForceOff (or a newer request) cancels without having to find and abort the timer.
    token: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingKind {
    Shutdown,
    Restart,
}

impl PendingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PendingKind::Shutdown => "GracefulShutdown",
            PendingKind::Restart => "GracefulRestart",
        }
    }
}

/// A timer the caller must arm: at `due`, call [`System::timer_fired`] with `token`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timer {
    pub token: u64,
    pub due: Instant,
}

/// One boot of the machine, from power on (or a restart) until it powers off or restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Run {
    /// Counts this system's boots, from 1.
    pub boot: u64,
    /// What the firmware booted: the override's target, or `Hdd` (the disk) without one.
    pub from: BootTarget,
}

#[derive(Debug)]
pub struct System {
    /// `Some` exactly while the power is on.
    run: Option<Run>,
    boots: u64,
    pub boot: Boot,
    pub behaviour: Behaviour,
    pending: Option<Pending>,
    next_token: u64,
    /// Per system, so a fixed seed gives each system the same failure sequence however requests
    /// to different systems interleave.
    rng: Rng,
    /// The deploy agent, when the control API configured one; it runs during PXE boots only.
    pub agent: Option<Agent>,
    pub serial: SerialPort,
}

impl System {
    pub fn new(behaviour: Behaviour, rng_seed: u64) -> Self {
        System {
            run: None,
            boots: 0,
            boot: Boot::default(),
            behaviour,
            pending: None,
            next_token: 0,
            rng: Rng::new(rng_seed),
            agent: None,
            serial: SerialPort::default(),
        }
    }

    pub fn power(&self) -> Power {
        if self.run.is_some() {
            Power::On
        } else {
            Power::Off
        }
    }

    /// The current boot; `None` while the power is off.
    pub fn run(&self) -> Option<Run> {
        self.run
    }

    /// Powers on (or restarts): the firmware picks the boot device, consuming a `Once` override.
    fn boot_up(&mut self) {
        let overridden =
            self.boot.enabled != BootEnabled::Disabled && self.boot.target != BootTarget::None;
        let from = if overridden {
            self.boot.target
        } else {
            BootTarget::Hdd
        };
        if overridden && self.boot.enabled == BootEnabled::Once {
            self.boot.enabled = BootEnabled::Disabled;
        }
        self.boots += 1;
        self.run = Some(Run {
            boot: self.boots,
            from,
        });
    }

    pub fn pending(&self) -> Option<Pending> {
        self.pending
    }

    /// Draws whether this request fails. Always draws, even at rate 0, so that the sequence for a
    /// seed does not depend on when the rate was changed.
    pub fn roll_failure(&mut self) -> bool {
        let x = self.rng.next_f64();
        x < self.behaviour.failure_rate
    }

    /// Applies a Redfish reset. Returns the timer to arm, if the reset started a graceful
    /// operation that completes later.
    pub fn reset(&mut self, reset: ResetType, now: Instant) -> Option<Timer> {
        match reset {
            ResetType::On | ResetType::ForceOn => {
                // Already on: nothing to do, and an OS that is shutting down keeps doing so.
                if self.run.is_none() {
                    self.boot_up();
                }
                None
            }
            ResetType::ForceOff => {
                self.set_power(Power::Off);
                None
            }
            ResetType::ForceRestart => {
                // A new boot whether it was on or off.
                self.pending = None;
                self.boot_up();
                None
            }
            ResetType::Nmi => None,
            ResetType::GracefulShutdown => self.graceful(PendingKind::Shutdown, now),
            ResetType::GracefulRestart => {
                if self.run.is_none() {
                    // Nothing to shut down: the restart is just a boot.
                    self.boot_up();
                    None
                } else {
                    self.graceful(PendingKind::Restart, now)
                }
            }
            // A short press on a running OS asks it to shut down (ACPI); on an off machine it
            // powers it on.
            ResetType::PushPowerButton => match self.power() {
                Power::Off => {
                    self.boot_up();
                    None
                }
                Power::On => self.graceful(PendingKind::Shutdown, now),
            },
        }
    }

    fn graceful(&mut self, kind: PendingKind, now: Instant) -> Option<Timer> {
        // Nothing runs to shut down.
        self.run?;
        if self.pending.is_some_and(|p| p.kind == kind) {
            // Asking again does not restart the OS's shutdown clock.
            return None;
        }
        let Some(after) = self.behaviour.graceful_shutdown() else {
            self.pending = Some(self.new_pending(kind, None));
            return None;
        };
        if after.is_zero() {
            // Completes at once, so that a GET right after the 204 already sees it.
            self.pending = None;
            self.complete(kind);
            return None;
        }
        let due = now + after;
        let pending = self.new_pending(kind, Some(due));
        self.pending = Some(pending);
        Some(Timer {
            token: pending.token,
            due,
        })
    }

    fn new_pending(&mut self, kind: PendingKind, due: Option<Instant>) -> Pending {
        self.next_token += 1;
        Pending {
            kind,
            due,
            token: self.next_token,
        }
    }

    fn complete(&mut self, kind: PendingKind) {
        match kind {
            PendingKind::Shutdown => self.run = None,
            // The short Off of a real restart is not shown: nobody can rely on seeing it.
            PendingKind::Restart => self.boot_up(),
        }
    }

    /// A timer armed by [`System::reset`] expired. Returns whether it still applied (it does not
    /// when the operation was cancelled or replaced in the meantime).
    pub fn timer_fired(&mut self, token: u64) -> bool {
        match self.pending {
            Some(p) if p.token == token => {
                self.pending = None;
                self.complete(p.kind);
                true
            }
            _ => false,
        }
    }

    /// Sets the power directly (a hard power action, or the control API simulating something
    /// that happened inside the machine). Cancels any pending graceful operation. Powering on a
    /// machine that is on does not boot it again.
    pub fn set_power(&mut self, power: Power) {
        self.pending = None;
        match power {
            Power::On if self.run.is_none() => self.boot_up(),
            Power::On => {}
            Power::Off => self.run = None,
        }
    }

    /// How long until the pending operation completes, for the control API's view.
    pub fn pending_due_in(&self, now: Instant) -> Option<Duration> {
        self.pending
            .and_then(|p| p.due)
            .map(|due| due.saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sys(graceful_secs: Option<f64>) -> System {
        let behaviour = Behaviour {
            graceful_shutdown_secs: graceful_secs,
            ..Behaviour::default()
        };
        System::new(behaviour, 1)
    }

    #[test]
    fn hard_actions_apply_at_once() {
        let now = Instant::now();
        let mut s = sys(Some(3.0));
        assert_eq!(s.reset(ResetType::On, now), None);
        assert_eq!(s.power(), Power::On);
        assert_eq!(s.reset(ResetType::ForceOff, now), None);
        assert_eq!(s.power(), Power::Off);
        assert_eq!(s.reset(ResetType::ForceOn, now), None);
        assert_eq!(s.power(), Power::On);
        assert_eq!(s.reset(ResetType::Nmi, now), None);
        assert_eq!(s.power(), Power::On);
        s.set_power(Power::Off);
        assert_eq!(s.reset(ResetType::ForceRestart, now), None);
        assert_eq!(s.power(), Power::On);
    }

    #[test]
    fn graceful_shutdown_completes_on_its_timer_only() {
        let now = Instant::now();
        let mut s = sys(Some(3.0));
        s.set_power(Power::On);
        let timer = s.reset(ResetType::GracefulShutdown, now).expect("a timer");
        assert_eq!(timer.due, now + Duration::from_secs(3));
        assert_eq!(s.power(), Power::On, "stays on while the OS shuts down");
        // Asking again neither re-arms nor extends.
        assert_eq!(s.reset(ResetType::GracefulShutdown, now), None);
        assert!(!s.timer_fired(timer.token + 1));
        assert_eq!(s.power(), Power::On);
        assert!(s.timer_fired(timer.token));
        assert_eq!(s.power(), Power::Off);
        assert_eq!(s.pending(), None);
    }

    #[test]
    fn force_off_cancels_a_pending_shutdown_and_its_timer() {
        let now = Instant::now();
        let mut s = sys(Some(3.0));
        s.set_power(Power::On);
        let timer = s.reset(ResetType::GracefulShutdown, now).expect("a timer");
        s.reset(ResetType::ForceOff, now);
        s.reset(ResetType::On, now);
        assert!(
            !s.timer_fired(timer.token),
            "a cancelled timer must not turn the system off"
        );
        assert_eq!(s.power(), Power::On);
    }

    #[test]
    fn never_completing_shutdown_arms_nothing() {
        let now = Instant::now();
        let mut s = sys(None);
        s.set_power(Power::On);
        assert_eq!(s.reset(ResetType::GracefulShutdown, now), None);
        assert_eq!(
            s.pending().map(|p| (p.kind, p.due)),
            Some((PendingKind::Shutdown, None))
        );
        assert_eq!(s.power(), Power::On);
    }

    #[test]
    fn zero_graceful_time_completes_at_once() {
        let now = Instant::now();
        let mut s = sys(Some(0.0));
        s.set_power(Power::On);
        assert_eq!(s.reset(ResetType::GracefulShutdown, now), None);
        assert_eq!(s.power(), Power::Off);
    }

    #[test]
    fn graceful_on_an_off_system() {
        let now = Instant::now();
        let mut s = sys(Some(3.0));
        assert_eq!(s.reset(ResetType::GracefulShutdown, now), None);
        assert_eq!(s.power(), Power::Off);
        assert_eq!(s.reset(ResetType::GracefulRestart, now), None);
        assert_eq!(s.power(), Power::On);
    }

    #[test]
    fn graceful_restart_ends_on() {
        let now = Instant::now();
        let mut s = sys(Some(2.0));
        s.set_power(Power::On);
        let timer = s.reset(ResetType::GracefulRestart, now).expect("a timer");
        assert_eq!(s.pending().map(|p| p.kind), Some(PendingKind::Restart));
        assert!(s.timer_fired(timer.token));
        assert_eq!(s.power(), Power::On);
        assert_eq!(s.pending(), None);
    }

    #[test]
    fn power_button_toggles_gracefully() {
        let now = Instant::now();
        let mut s = sys(Some(1.0));
        assert_eq!(s.reset(ResetType::PushPowerButton, now), None);
        assert_eq!(s.power(), Power::On);
        let timer = s.reset(ResetType::PushPowerButton, now).expect("a timer");
        assert_eq!(s.power(), Power::On);
        assert!(s.timer_fired(timer.token));
        assert_eq!(s.power(), Power::Off);
    }

    fn pxe(s: &mut System, enabled: BootEnabled) {
        s.boot.target = BootTarget::Pxe;
        s.boot.enabled = enabled;
    }

    #[test]
    fn every_boot_is_a_new_run_and_off_ends_it() {
        let now = Instant::now();
        let mut s = sys(Some(2.0));
        assert_eq!(s.run(), None);
        s.reset(ResetType::On, now);
        let first = s.run().expect("on");
        assert_eq!(
            first,
            Run {
                boot: 1,
                from: BootTarget::Hdd
            }
        );
        s.reset(ResetType::On, now);
        assert_eq!(s.run(), Some(first), "on while on is not a boot");
        s.set_power(Power::On);
        assert_eq!(s.run(), Some(first));
        s.reset(ResetType::ForceRestart, now);
        assert_eq!(s.run().map(|r| r.boot), Some(2));
        let t = s.reset(ResetType::GracefulRestart, now).expect("a timer");
        assert_eq!(
            s.run().map(|r| r.boot),
            Some(2),
            "the OS is still shutting down"
        );
        assert!(s.timer_fired(t.token));
        assert_eq!(s.run().map(|r| r.boot), Some(3));
        s.reset(ResetType::ForceOff, now);
        assert_eq!(s.run(), None);
        s.reset(ResetType::PushPowerButton, now);
        assert_eq!(s.run().map(|r| r.boot), Some(4));
        s.set_power(Power::Off);
        s.set_power(Power::On);
        assert_eq!(s.run().map(|r| r.boot), Some(5));
    }

    #[test]
    fn a_once_override_is_consumed_by_the_boot_it_applies_to() {
        let now = Instant::now();
        let mut s = sys(Some(2.0));
        pxe(&mut s, BootEnabled::Once);
        s.reset(ResetType::On, now);
        assert_eq!(s.run().map(|r| r.from), Some(BootTarget::Pxe));
        assert_eq!(s.boot.enabled, BootEnabled::Disabled);
        assert_eq!(s.boot.target, BootTarget::Pxe, "the target stays as set");
        s.reset(ResetType::ForceRestart, now);
        assert_eq!(s.run().map(|r| r.from), Some(BootTarget::Hdd));
    }

    #[test]
    fn a_continuous_override_applies_to_every_boot_and_disabled_to_none() {
        let now = Instant::now();
        let mut s = sys(Some(0.0));
        pxe(&mut s, BootEnabled::Continuous);
        for _ in 0..3 {
            s.reset(ResetType::ForceRestart, now);
            assert_eq!(s.run().map(|r| r.from), Some(BootTarget::Pxe));
        }
        assert_eq!(s.boot.enabled, BootEnabled::Continuous);
        pxe(&mut s, BootEnabled::Disabled);
        s.reset(ResetType::ForceRestart, now);
        assert_eq!(s.run().map(|r| r.from), Some(BootTarget::Hdd));
        s.boot.target = BootTarget::None;
        s.boot.enabled = BootEnabled::Once;
        s.reset(ResetType::GracefulRestart, now);
        assert_eq!(s.run().map(|r| r.from), Some(BootTarget::Hdd));
        assert_eq!(
            s.boot.enabled,
            BootEnabled::Once,
            "no target: nothing to consume"
        );
    }

    #[test]
    fn reset_type_names_round_trip() {
        for r in ResetType::ALL {
            assert_eq!(ResetType::parse(r.as_str()), Some(r));
        }
        assert_eq!(ResetType::parse("on"), None);
        assert_eq!(BootMode::parse("UEFI"), Some(BootMode::Uefi));
        assert_eq!(BootTarget::parse("pxe"), None);
    }
}
