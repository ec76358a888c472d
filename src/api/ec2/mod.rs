//! The EC2 Query actions: one function per action that reads its parameters, calls the
//! service, and writes the response XML.

mod images;
mod import;
mod instance_types;
mod instances;
mod regions;
mod snapshots;
mod tags;
mod volumes;

use super::query::Params;
use super::xml::XmlWriter;
use crate::error::{Error, Result};
use crate::service::{RequestContext, Service};

/// What a handler gets: the service, the caller, the parameters, and response details.
pub struct Call<'a> {
    /// The service.
    pub service: &'a Service,
    /// The authenticated caller.
    pub ctx: &'a RequestContext,
    /// Request parameters.
    pub params: &'a Params,
    /// The action name.
    pub action: &'a str,
    /// Request id echoed in the response.
    pub request_id: &'a str,
    /// The endpoint clients reached (for DescribeRegions).
    pub endpoint: &'a str,
}

impl Call<'_> {
    /// Starts the response document.
    pub fn response(&self) -> XmlWriter {
        XmlWriter::response(self.action, self.request_id)
    }

    /// Finishes a response document.
    pub fn finish(&self, w: XmlWriter) -> String {
        w.finish(self.action)
    }

    /// A response with just `<return>true</return>`.
    pub fn return_true(&self) -> String {
        let mut w = self.response();
        w.bool_leaf("return", true);
        self.finish(w)
    }
}

type Handler = fn(&Call<'_>) -> Result<String>;

/// Every supported action and its handler.
pub const ACTIONS: &[(&str, Handler)] = &[
    ("DescribeRegions", regions::describe_regions),
    (
        "DescribeAvailabilityZones",
        regions::describe_availability_zones,
    ),
    ("RegisterImage", images::register_image),
    ("DescribeImages", images::describe_images),
    ("DeregisterImage", images::deregister_image),
    ("CopyImage", images::copy_image),
    ("DescribeImageAttribute", images::describe_image_attribute),
    ("ModifyImageAttribute", images::modify_image_attribute),
    ("ResetImageAttribute", images::reset_image_attribute),
    ("EnableImageDeprecation", images::enable_image_deprecation),
    ("DisableImageDeprecation", images::disable_image_deprecation),
    ("DisableImage", images::disable_image),
    ("EnableImage", images::enable_image),
    (
        "EnableImageDeregistrationProtection",
        images::enable_deregistration_protection,
    ),
    (
        "DisableImageDeregistrationProtection",
        images::disable_deregistration_protection,
    ),
    (
        "GetImageBlockPublicAccessState",
        images::get_image_block_public_access_state,
    ),
    (
        "EnableImageBlockPublicAccess",
        images::enable_image_block_public_access,
    ),
    (
        "DisableImageBlockPublicAccess",
        images::disable_image_block_public_access,
    ),
    (
        "DescribeInstanceTypes",
        instance_types::describe_instance_types,
    ),
    ("RunInstances", instances::run_instances),
    ("DescribeInstances", instances::describe_instances),
    (
        "DescribeInstanceStatus",
        instances::describe_instance_status,
    ),
    ("StartInstances", instances::start_instances),
    ("StopInstances", instances::stop_instances),
    ("RebootInstances", instances::reboot_instances),
    ("TerminateInstances", instances::terminate_instances),
    ("GetConsoleOutput", instances::get_console_output),
    (
        "DescribeInstanceAttribute",
        instances::describe_instance_attribute,
    ),
    (
        "ModifyInstanceAttribute",
        instances::modify_instance_attribute,
    ),
    ("CreateImage", instances::create_image),
    ("CreateSnapshots", instances::create_snapshots),
    ("AttachVolume", instances::attach_volume),
    ("DetachVolume", instances::detach_volume),
    ("CreateVolume", volumes::create_volume),
    ("DescribeVolumes", volumes::describe_volumes),
    ("DeleteVolume", volumes::delete_volume),
    ("ModifyVolume", volumes::modify_volume),
    (
        "DescribeVolumesModifications",
        volumes::describe_volumes_modifications,
    ),
    ("CreateSnapshot", volumes::create_snapshot),
    ("DescribeSnapshots", snapshots::describe_snapshots),
    ("DeleteSnapshot", snapshots::delete_snapshot),
    ("CopySnapshot", snapshots::copy_snapshot),
    (
        "DescribeSnapshotAttribute",
        snapshots::describe_snapshot_attribute,
    ),
    (
        "ModifySnapshotAttribute",
        snapshots::modify_snapshot_attribute,
    ),
    (
        "ResetSnapshotAttribute",
        snapshots::reset_snapshot_attribute,
    ),
    ("ImportSnapshot", import::import_snapshot),
    ("ImportImage", import::import_image),
    (
        "DescribeImportSnapshotTasks",
        import::describe_import_snapshot_tasks,
    ),
    (
        "DescribeImportImageTasks",
        import::describe_import_image_tasks,
    ),
    ("CancelImportTask", import::cancel_import_task),
    ("ExportImage", import::export_image),
    (
        "DescribeExportImageTasks",
        import::describe_export_image_tasks,
    ),
    ("CreateTags", tags::create_tags),
    ("DeleteTags", tags::delete_tags),
    ("DescribeTags", tags::describe_tags),
];

/// Runs one action for an authenticated caller and returns the response XML.
pub fn dispatch(
    service: &Service,
    ctx: &RequestContext,
    action: &str,
    params: &Params,
    request_id: &str,
    endpoint: &str,
) -> Result<String> {
    let handler = ACTIONS
        .iter()
        .find(|(name, _)| *name == action)
        .map(|(_, h)| *h)
        .ok_or_else(|| Error::InvalidAction(action.to_string()))?;
    let call = Call {
        service,
        ctx,
        params,
        action,
        request_id,
        endpoint,
    };
    handler(&call).map_err(|e| {
        if ctx.dry_run && e.is_permission_denied() {
            Error::UnauthorizedOperation
        } else {
            e
        }
    })
}

/// Writes the caller's tags of a resource as `<tagSet>` (omitted when empty, as EC2 does).
pub(crate) fn write_tag_set(w: &mut XmlWriter, tags: crate::service::model::AccountTags<'_>) {
    if tags.is_empty() {
        return;
    }
    w.open("tagSet");
    for (k, v) in tags.iter() {
        w.open("item").leaf("key", k).leaf("value", v).close("item");
    }
    w.close("tagSet");
}

#[cfg(test)]
mod tests {
    //! Property tests: random Query input through the real dispatcher and a real service on a
    //! temporary SQLite file. Any input may be refused, but none may panic, and a refused
    //! write leaves nothing behind.
    use super::*;
    use crate::service::model::Account;
    use crate::service::ServiceConfig;
    use proptest::prelude::*;

    fn service() -> (tempfile::TempDir, Service) {
        let dir = tempfile::tempdir().expect("tempdir");
        let svc = Service::open(dir.path(), ServiceConfig::default()).expect("service");
        (dir, svc)
    }

    fn ctx(dry_run: bool) -> RequestContext {
        RequestContext {
            account: Account {
                account_id: "123456789012".into(),
                name: "t".into(),
                alias: None,
                organization_arn: None,
                organizational_unit_arn: None,
            },
            region: "us-east-1".into(),
            dry_run,
        }
    }

    fn key_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("ImageId.1".to_string()),
            Just("Name".to_string()),
            Just("Filter.1.Name".to_string()),
            Just("Filter.1.Value.1".to_string()),
            Just("BlockDeviceMapping.1.Ebs.SnapshotId".to_string()),
            Just("BlockDeviceMapping.1.DeviceName".to_string()),
            Just("RootDeviceName".to_string()),
            Just("MaxResults".to_string()),
            Just("NextToken".to_string()),
            Just("Tag.1.Key".to_string()),
            Just("ResourceId.1".to_string()),
            Just("LaunchPermission.Add.1.UserId".to_string()),
            Just("Attribute".to_string()),
            "[A-Za-z.0-9]{1,24}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        #[test]
        fn dispatch_random_params_never_panics(
            action_index in 0..ACTIONS.len(),
            pairs in proptest::collection::vec((key_strategy(), ".{0,40}"), 0..8),
            dry_run in any::<bool>(),
        ) {
            let (_dir, svc) = service();
            let params = Params::from_pairs(pairs);
            let action = ACTIONS[action_index].0;
            let _ = dispatch(&svc, &ctx(dry_run), action, &params, "req", "host");
        }

        #[test]
        fn register_image_random_params_failure_changes_nothing(
            pairs in proptest::collection::vec((key_strategy(), ".{0,40}"), 0..8),
        ) {
            let (_dir, svc) = service();
            let params = Params::from_pairs(pairs);
            if dispatch(&svc, &ctx(false), "RegisterImage", &params, "req", "host").is_err() {
                let state = svc.read().expect("state");
                prop_assert!(state.images.is_empty());
            }
        }

        #[test]
        fn params_from_form_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let p = Params::from_form(&bytes);
            let _ = p.filters();
            let _ = p.tag_specifications();
            let _ = p.list("ImageId");
            let _ = p.structs("BlockDeviceMapping");
        }
    }

    #[test]
    fn dispatch_unknown_action_fails_with_invalid_action() {
        let (_dir, svc) = service();
        let err = dispatch(
            &svc,
            &ctx(false),
            "LaunchRockets",
            &Params::default(),
            "r",
            "h",
        )
        .unwrap_err();
        assert_eq!(err.code(), "InvalidAction");
    }

    #[test]
    fn dispatch_dry_run_describe_fails_with_dry_run_operation() {
        let (_dir, svc) = service();
        let err = dispatch(
            &svc,
            &ctx(true),
            "DescribeImages",
            &Params::default(),
            "r",
            "h",
        )
        .unwrap_err();
        assert_eq!(err.code(), "DryRunOperation");
    }
}
