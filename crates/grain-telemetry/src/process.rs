//! The process's own CPU time and memory, after OTel's `process.*` conventions. One set
//! of callbacks per process, registered once at install.

use opentelemetry::KeyValue;
use opentelemetry::metrics::Meter;

/// One process instrument: name, kind, unit, attributes, description (the shape of
/// `grain::metrics::InstrumentDef`, for the docs catalog).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessInstrument {
    /// Metric name.
    pub name: &'static str,
    /// `counter` or `updowncounter`.
    pub kind: &'static str,
    /// Unit.
    pub unit: &'static str,
    /// Attributes.
    pub attributes: &'static [&'static str],
    /// Meaning.
    pub description: &'static str,
}

/// The process instruments this crate records.
pub const INSTRUMENTS: &[ProcessInstrument] = &[
    ProcessInstrument {
        name: "process.cpu.time",
        kind: "counter",
        unit: "s",
        attributes: &["cpu.mode"],
        description: "CPU time used by this process, by mode (user, system).",
    },
    ProcessInstrument {
        name: "process.memory.usage",
        kind: "updowncounter",
        unit: "By",
        attributes: &[],
        description: "Resident memory of this process.",
    },
    ProcessInstrument {
        name: "process.memory.virtual",
        kind: "updowncounter",
        unit: "By",
        attributes: &[],
        description: "Virtual memory of this process.",
    },
];

fn cpu_seconds() -> Option<(f64, f64)> {
    use nix::sys::resource::{UsageWho, getrusage};
    let u = getrusage(UsageWho::RUSAGE_SELF).ok()?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Some((secs(u.user_time()), secs(u.system_time())))
}

/// (resident, virtual) bytes from `/proc/self/statm`.
fn memory_bytes() -> Option<(i64, i64)> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let mut fields = statm.split_whitespace().map(|f| f.parse::<i64>().ok());
    let size = fields.next()??;
    let resident = fields.next()??;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096);
    Some((resident * page, size * page))
}

/// Registers `process.cpu.time` and `process.memory.usage` / `process.memory.virtual`.
pub(crate) fn register(meter: &Meter) {
    let [cpu, rss, size] = [INSTRUMENTS[0], INSTRUMENTS[1], INSTRUMENTS[2]];
    let _cpu = meter
        .f64_observable_counter(cpu.name)
        .with_unit(cpu.unit)
        .with_description(cpu.description)
        .with_callback(|observer| {
            if let Some((user, system)) = cpu_seconds() {
                observer.observe(user, &[KeyValue::new("cpu.mode", "user")]);
                observer.observe(system, &[KeyValue::new("cpu.mode", "system")]);
            }
        })
        .build();
    let _rss = meter
        .i64_observable_up_down_counter(rss.name)
        .with_unit(rss.unit)
        .with_description(rss.description)
        .with_callback(|observer| {
            if let Some((resident, _)) = memory_bytes() {
                observer.observe(resident, &[]);
            }
        })
        .build();
    let _virtual = meter
        .i64_observable_up_down_counter(size.name)
        .with_unit(size.unit)
        .with_description(size.description)
        .with_callback(|observer| {
            if let Some((_, size)) = memory_bytes() {
                observer.observe(size, &[]);
            }
        })
        .build();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_memory_are_read_from_the_os() {
        let (user, system) = cpu_seconds().unwrap_or_default();
        assert!(user + system > 0.0);
        let (resident, size) = memory_bytes().unwrap_or_default();
        assert!(resident > 0 && size >= resident, "{resident} {size}");
    }
}
