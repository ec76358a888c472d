//! DescribeInstanceTypes: parameters in, XML out.

use super::Call;
use crate::api::xml::XmlWriter;
use crate::error::Result;
use crate::service::instance_types::InstanceType;

/// DescribeInstanceTypes.
pub fn describe_instance_types(call: &Call<'_>) -> Result<String> {
    let p = call.params;
    let (types, next_token) = call.service.describe_instance_types(
        call.ctx,
        &p.list("InstanceType")?,
        &p.filters()?,
        p.int("MaxResults")?,
        p.get("NextToken"),
    )?;
    let mut w = call.response();
    w.open("instanceTypeSet");
    for t in types {
        w.open("item");
        write_instance_type(&mut w, t);
        w.close("item");
    }
    w.close("instanceTypeSet");
    w.opt_leaf("nextToken", next_token.as_deref());
    Ok(call.finish(w))
}

fn list(w: &mut XmlWriter, tag: &str, items: &[&str]) {
    w.open(tag);
    for i in items {
        w.leaf("item", i);
    }
    w.close(tag);
}

fn write_instance_type(w: &mut XmlWriter, t: &InstanceType) {
    let nitro = t.hypervisor() == "nitro";
    w.leaf("instanceType", t.name)
        .bool_leaf("currentGeneration", true)
        .bool_leaf("freeTierEligible", t.free_tier_eligible());
    list(w, "supportedUsageClasses", &["on-demand", "spot"]);
    list(w, "supportedRootDeviceTypes", &["ebs"]);
    list(w, "supportedVirtualizationTypes", &["hvm"]);
    w.bool_leaf("bareMetal", false)
        .leaf("hypervisor", t.hypervisor());
    w.open("processorInfo");
    list(w, "supportedArchitectures", t.architectures());
    w.leaf("sustainedClockSpeedInGhz", t.clock_ghz)
        .leaf("manufacturer", "Intel")
        .close("processorInfo");
    w.open("vCpuInfo")
        .leaf("defaultVCpus", &t.vcpus.to_string())
        .leaf(
            "defaultCores",
            &(t.vcpus / t.threads_per_core()).to_string(),
        )
        .leaf("defaultThreadsPerCore", &t.threads_per_core().to_string())
        .close("vCpuInfo");
    w.open("memoryInfo")
        .leaf("sizeInMiB", &t.memory_mib.to_string())
        .close("memoryInfo");
    w.bool_leaf("instanceStorageSupported", false);
    w.open("ebsInfo")
        .leaf(
            "ebsOptimizedSupport",
            if nitro { "default" } else { "unsupported" },
        )
        .leaf("encryptionSupport", "supported")
        .leaf(
            "nvmeSupport",
            if nitro { "required" } else { "unsupported" },
        )
        .close("ebsInfo");
    w.open("networkInfo")
        .leaf("networkPerformance", t.network_performance)
        .leaf("maximumNetworkInterfaces", &t.interfaces.0.to_string())
        .leaf("maximumNetworkCards", "1")
        .leaf("defaultNetworkCardIndex", "0")
        .leaf("ipv4AddressesPerInterface", &t.interfaces.1.to_string())
        .leaf("ipv6AddressesPerInterface", &t.interfaces.1.to_string())
        .bool_leaf("ipv6Supported", true)
        .leaf("enaSupport", if nitro { "required" } else { "unsupported" })
        .bool_leaf("efaSupported", false)
        .bool_leaf("encryptionInTransitSupported", false)
        .bool_leaf("enaSrdSupported", false)
        .close("networkInfo");
    w.open("placementGroupInfo");
    list(w, "supportedStrategies", &["partition", "spread"]);
    w.close("placementGroupInfo");
    w.bool_leaf("hibernationSupported", false)
        .bool_leaf("burstablePerformanceSupported", t.burstable())
        .bool_leaf("dedicatedHostsSupported", false)
        .bool_leaf("autoRecoverySupported", true);
    list(w, "supportedBootModes", &["legacy-bios", "uefi"]);
}
