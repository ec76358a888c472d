//! DescribeInstanceTypes: the instance types Kiln can run, with the vCPUs and memory an
//! instance of each type gets (the t2, t3, m5 and c5 families, as AWS describes them).

use super::filters::{bool_value, Filter, Filters, RawFilter};
use super::pagination::PageRequest;
use super::{RequestContext, Service};
use crate::error::{Error, Result};

/// One instance type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceType {
    /// `t3.micro`, ...
    pub name: &'static str,
    /// vCPUs an instance gets.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Network performance as AWS words it.
    pub network_performance: &'static str,
    /// Elastic network interfaces, and IPv4 addresses per interface.
    pub interfaces: (u32, u32),
    /// Sustained clock speed, GHz.
    pub clock_ghz: &'static str,
}

impl InstanceType {
    /// The family: `t3` of `t3.micro`.
    pub fn family(&self) -> &'static str {
        self.name.split('.').next().unwrap_or(self.name)
    }

    /// Burstable (T) types earn and spend CPU credits.
    pub fn burstable(&self) -> bool {
        self.family().starts_with('t')
    }

    /// T2 runs on Xen with one thread per core; the others on Nitro with two.
    pub fn hypervisor(&self) -> &'static str {
        if self.family() == "t2" {
            "xen"
        } else {
            "nitro"
        }
    }

    /// Threads per core.
    pub fn threads_per_core(&self) -> u32 {
        if self.family() == "t2" || self.vcpus == 1 {
            1
        } else {
            2
        }
    }

    /// Architectures: T2 also runs 32-bit images.
    pub fn architectures(&self) -> &'static [&'static str] {
        if self.family() == "t2" {
            &["i386", "x86_64"]
        } else {
            &["x86_64"]
        }
    }

    /// Eligible for the free tier.
    pub fn free_tier_eligible(&self) -> bool {
        matches!(self.name, "t2.micro" | "t3.micro")
    }
}

const fn t(
    name: &'static str,
    vcpus: u32,
    memory_mib: u64,
    network_performance: &'static str,
    interfaces: (u32, u32),
    clock_ghz: &'static str,
) -> InstanceType {
    InstanceType {
        name,
        vcpus,
        memory_mib,
        network_performance,
        interfaces,
        clock_ghz,
    }
}

/// Every type Kiln offers, sorted by name.
pub const INSTANCE_TYPES: &[InstanceType] = &[
    t("c5.12xlarge", 48, 98_304, "12 Gigabit", (8, 30), "3.6"),
    t("c5.18xlarge", 72, 147_456, "25 Gigabit", (15, 50), "3.4"),
    t("c5.24xlarge", 96, 196_608, "25 Gigabit", (15, 50), "3.6"),
    t("c5.2xlarge", 8, 16_384, "Up to 10 Gigabit", (4, 15), "3.4"),
    t("c5.4xlarge", 16, 32_768, "Up to 10 Gigabit", (8, 30), "3.4"),
    t("c5.9xlarge", 36, 73_728, "12 Gigabit", (8, 30), "3.4"),
    t("c5.large", 2, 4_096, "Up to 10 Gigabit", (3, 10), "3.4"),
    t("c5.xlarge", 4, 8_192, "Up to 10 Gigabit", (4, 15), "3.4"),
    t("m5.12xlarge", 48, 196_608, "12 Gigabit", (8, 30), "3.1"),
    t("m5.16xlarge", 64, 262_144, "20 Gigabit", (15, 50), "3.1"),
    t("m5.24xlarge", 96, 393_216, "25 Gigabit", (15, 50), "3.1"),
    t("m5.2xlarge", 8, 32_768, "Up to 10 Gigabit", (4, 15), "3.1"),
    t("m5.4xlarge", 16, 65_536, "Up to 10 Gigabit", (8, 30), "3.1"),
    t("m5.8xlarge", 32, 131_072, "10 Gigabit", (8, 30), "3.1"),
    t("m5.large", 2, 8_192, "Up to 10 Gigabit", (3, 10), "3.1"),
    t("m5.xlarge", 4, 16_384, "Up to 10 Gigabit", (4, 15), "3.1"),
    t("t2.large", 2, 8_192, "Low to Moderate", (3, 12), "2.3"),
    t("t2.medium", 2, 4_096, "Low to Moderate", (3, 6), "2.3"),
    t("t2.micro", 1, 1_024, "Low to Moderate", (2, 2), "2.5"),
    t("t2.nano", 1, 512, "Low to Moderate", (2, 2), "2.4"),
    t("t2.small", 1, 2_048, "Low to Moderate", (3, 4), "2.5"),
    t("t3.2xlarge", 8, 32_768, "Up to 5 Gigabit", (4, 15), "2.5"),
    t("t3.large", 2, 8_192, "Up to 5 Gigabit", (3, 12), "2.5"),
    t("t3.medium", 2, 4_096, "Up to 5 Gigabit", (3, 6), "2.5"),
    t("t3.micro", 2, 1_024, "Up to 5 Gigabit", (2, 2), "2.5"),
    t("t3.nano", 2, 512, "Up to 5 Gigabit", (2, 2), "2.5"),
    t("t3.small", 2, 2_048, "Up to 5 Gigabit", (3, 4), "2.5"),
    t("t3.xlarge", 4, 16_384, "Up to 5 Gigabit", (4, 15), "2.5"),
];

/// The type named `name`, if Kiln offers it.
pub fn instance_type(name: &str) -> Option<&'static InstanceType> {
    INSTANCE_TYPES.iter().find(|t| t.name == name)
}

const INSTANCE_TYPE_FILTERS: &[&str] = &[
    "bare-metal",
    "burstable-performance-supported",
    "current-generation",
    "free-tier-eligible",
    "hibernation-supported",
    "hypervisor",
    "instance-storage-supported",
    "instance-type",
    "memory-info.size-in-mib",
    "network-info.network-performance",
    "processor-info.supported-architecture",
    "processor-info.manufacturer",
    "supported-boot-mode",
    "supported-root-device-type",
    "supported-usage-class",
    "supported-virtualization-type",
    "vcpu-info.default-cores",
    "vcpu-info.default-threads-per-core",
    "vcpu-info.default-vcpus",
];

fn filter_values(t: &InstanceType, f: &Filter) -> Vec<String> {
    let one = |s: &str| vec![s.to_string()];
    match f.name.as_str() {
        "bare-metal" | "instance-storage-supported" | "hibernation-supported" => {
            vec![bool_value(false)]
        }
        "burstable-performance-supported" => vec![bool_value(t.burstable())],
        "current-generation" => vec![bool_value(true)],
        "free-tier-eligible" => vec![bool_value(t.free_tier_eligible())],
        "hypervisor" => one(t.hypervisor()),
        "instance-type" => one(t.name),
        "memory-info.size-in-mib" => vec![t.memory_mib.to_string()],
        "network-info.network-performance" => one(t.network_performance),
        "processor-info.supported-architecture" => {
            t.architectures().iter().map(|a| a.to_string()).collect()
        }
        "processor-info.manufacturer" => one("Intel"),
        "supported-boot-mode" => vec!["legacy-bios".into(), "uefi".into()],
        "supported-root-device-type" => one("ebs"),
        "supported-usage-class" => vec!["on-demand".into(), "spot".into()],
        "supported-virtualization-type" => one("hvm"),
        "vcpu-info.default-cores" => vec![(t.vcpus / t.threads_per_core()).to_string()],
        "vcpu-info.default-threads-per-core" => vec![t.threads_per_core().to_string()],
        "vcpu-info.default-vcpus" => vec![t.vcpus.to_string()],
        _ => Vec::new(),
    }
}

impl Service {
    /// DescribeInstanceTypes: the named types (all of them unknown names are an error), or
    /// every type, filtered, one page at a time (5 to 100 per page).
    pub fn describe_instance_types(
        &self,
        ctx: &RequestContext,
        names: &[String],
        filters: &[RawFilter],
        max_results: Option<i64>,
        next_token: Option<&str>,
    ) -> Result<(Vec<&'static InstanceType>, Option<String>)> {
        if max_results.is_some_and(|n| !(5..=100).contains(&n)) {
            return Err(Error::InvalidParameterValue(format!(
                "MaxResults must be between 5 and 100, got {}",
                max_results.unwrap_or_default()
            )));
        }
        let page = PageRequest::parse(max_results, next_token, false, 5)?;
        let filters = Filters::compile(filters, INSTANCE_TYPE_FILTERS, false)?;
        let unknown: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| instance_type(n).is_none())
            .collect();
        if !unknown.is_empty() {
            return Err(Error::InvalidInstanceType(unknown.join(", ")));
        }
        ctx.finish_dry_run()?;
        let after = page.after.clone();
        let rows = INSTANCE_TYPES
            .iter()
            .filter(|t| names.is_empty() || names.iter().any(|n| n == t.name))
            .filter(|t| filters.matches(|f| filter_values(t, f)))
            .filter(|t| after.as_deref().is_none_or(|a| t.name > a))
            .map(|t| (t.name.to_string(), t));
        Ok(page.take(rows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_types_table_is_sorted_and_unique() {
        for pair in INSTANCE_TYPES.windows(2) {
            assert!(
                pair[0].name < pair[1].name,
                "{} before {}",
                pair[0].name,
                pair[1].name
            );
        }
    }

    #[test]
    fn instance_type_t3_micro_has_two_vcpus_and_one_gib() {
        let t = instance_type("t3.micro").unwrap();
        assert_eq!((t.vcpus, t.memory_mib), (2, 1024));
        assert!(t.burstable());
        assert_eq!(t.threads_per_core(), 2);
        assert!(instance_type("t9.huge").is_none());
    }
}
