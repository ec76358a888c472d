//! The one error type of Kiln's library: every variant is one AWS error code.
//!
//! The protocol layer renders these as EC2 Query error XML (or EBS REST-JSON errors); the
//! service layer returns them. The `Display` text is the message the client sees.

/// An error a request can end with, named after the AWS error code it maps to.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// A required parameter is absent.
    #[error("The request must contain the parameter {0}")]
    MissingParameter(String),
    /// A parameter has a value that is not allowed.
    #[error("{0}")]
    InvalidParameterValue(String),
    /// Two parameters that cannot be used together were both given.
    #[error("{0}")]
    InvalidParameterCombination(String),
    /// A parameter is not valid for this action.
    #[error("{0}")]
    InvalidParameter(String),
    /// The action does not exist or is not supported.
    #[error("The action {0} is not valid for this web service.")]
    InvalidAction(String),
    /// The pagination token cannot be used.
    #[error("Invalid pagination token: {0}")]
    InvalidPaginationToken(String),
    /// The request has no usable credentials.
    #[error("The request must contain either a valid (registered) AWS access key ID or X.509 certificate.")]
    MissingAuthenticationToken,
    /// The Authorization header or presigned query is malformed.
    #[error("{0}")]
    IncompleteSignature(String),
    /// The credentials are not known, or the caller may not touch this resource.
    #[error("{0}")]
    AuthFailure(String),
    /// The signature does not match the one Kiln computed.
    #[error("The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.")]
    SignatureDoesNotMatch,
    /// The request's timestamp is too far from the server's clock, or a presigned URL expired.
    #[error("{0}")]
    RequestExpired(String),
    /// A DryRun request would have succeeded.
    #[error("Request would have succeeded, but DryRun flag is set.")]
    DryRunOperation,
    /// The caller is not allowed to perform this operation (reported for DryRun requests).
    #[error("You are not authorized to perform this operation.")]
    UnauthorizedOperation,
    /// The operation is not allowed in the resource's current configuration.
    #[error("{0}")]
    OperationNotPermitted(String),
    /// The resource is not in a state that allows the operation.
    #[error("{0}")]
    IncorrectState(String),
    /// A ClientToken was reused with different parameters.
    #[error("{0}")]
    IdempotentParameterMismatch(String),
    /// An image id is not well formed.
    #[error("Invalid id: \"{0}\" (expecting \"ami-...\")")]
    InvalidAmiIdMalformed(String),
    /// An image id does not exist or is not visible to the caller.
    #[error("The image id '[{0}]' does not exist")]
    InvalidAmiIdNotFound(String),
    /// The image exists but cannot be used in its current state.
    #[error("{0}")]
    InvalidAmiIdUnavailable(String),
    /// An image with this name already exists for the account in the region.
    #[error("AMI name {0} is already in use by AMI {1}")]
    InvalidAmiNameDuplicate(String, String),
    /// The image name does not satisfy the naming rules.
    #[error("{0}")]
    InvalidAmiNameMalformed(String),
    /// A launch permission item is not valid.
    #[error("{0}")]
    InvalidAmiAttributeItemValue(String),
    /// A snapshot id is not well formed.
    #[error("Invalid id: \"{0}\" (expecting \"snap-...\")")]
    InvalidSnapshotIdMalformed(String),
    /// A snapshot id does not exist or is not visible to the caller.
    #[error("The snapshot '{0}' does not exist.")]
    InvalidSnapshotNotFound(String),
    /// The snapshot is used by a registered image.
    #[error("The snapshot {0} is currently in use by {1}")]
    InvalidSnapshotInUse(String, String),
    /// A volume id is not well formed.
    #[error("Invalid id: \"{0}\" (expecting \"vol-...\")")]
    InvalidVolumeIdMalformed(String),
    /// A volume id does not exist or is not the caller's.
    #[error("The volume '{0}' does not exist.")]
    InvalidVolumeNotFound(String),
    /// The volume is attached to an instance.
    #[error("Volume {0} is currently attached to {1}")]
    VolumeInUse(String, String),
    /// A volume is being modified already.
    #[error("{0}")]
    IncorrectModificationState(String),
    /// A volume has never been modified.
    #[error("Modification for volume '{0}' does not exist.")]
    InvalidVolumeModificationNotFound(String),
    /// An instance type Kiln does not offer.
    #[error("The following supplied instance types do not exist: [{0}]")]
    InvalidInstanceType(String),
    /// An instance id is not well formed.
    #[error("Invalid id: \"{0}\" (expecting \"i-...\")")]
    InvalidInstanceIdMalformed(String),
    /// An instance id does not exist or is not the caller's.
    #[error("The instance ID '{0}' does not exist")]
    InvalidInstanceIdNotFound(String),
    /// The instance is not in a state that allows the operation.
    #[error("{0}")]
    IncorrectInstanceState(String),
    /// A volume and an instance are in different availability zones.
    #[error("{0}")]
    InvalidVolumeZoneMismatch(String),
    /// The kernel or ramdisk image of a PV image cannot be used.
    #[error("{0}")]
    InvalidAkiIdNotFound(String),
    /// An availability zone that the region does not have.
    #[error("Invalid availability zone: [{0}]")]
    InvalidAvailabilityZone(String),
    /// A block device mapping is not valid (sizes, device names, virtual names).
    #[error("{0}")]
    InvalidBlockDeviceMapping(String),
    /// A resource id of an unknown kind or shape.
    #[error("The ID '{0}' is not valid")]
    InvalidId(String),
    /// The resource would have more tags than allowed.
    #[error("The maximum number of tags for a resource ({0}) has been reached.")]
    TagLimitExceeded(usize),
    /// An EBS direct API request is invalid (`ValidationException` with a reason).
    #[error("{message}")]
    EbsValidation {
        /// The `Reason` field of the EBS ValidationException.
        reason: &'static str,
        /// Human-readable message.
        message: String,
    },
    /// An EBS direct API request names a snapshot or block that does not exist.
    #[error("{0}")]
    EbsResourceNotFound(String),
    /// An EBS direct API request conflicts with the snapshot's state.
    #[error("{0}")]
    EbsConflict(String),
    /// Something failed inside Kiln (store I/O, corrupt record).
    #[error("An internal error has occurred: {0}")]
    InternalError(String),
}

impl Error {
    /// The AWS error code sent to the client.
    pub fn code(&self) -> &'static str {
        match self {
            Error::MissingParameter(_) => "MissingParameter",
            Error::InvalidParameterValue(_) => "InvalidParameterValue",
            Error::InvalidParameterCombination(_) => "InvalidParameterCombination",
            Error::InvalidParameter(_) => "InvalidParameter",
            Error::InvalidAction(_) => "InvalidAction",
            Error::InvalidPaginationToken(_) => "InvalidPaginationToken",
            Error::MissingAuthenticationToken => "MissingAuthenticationToken",
            Error::IncompleteSignature(_) => "IncompleteSignature",
            Error::AuthFailure(_) => "AuthFailure",
            Error::SignatureDoesNotMatch => "SignatureDoesNotMatch",
            Error::RequestExpired(_) => "RequestExpired",
            Error::DryRunOperation => "DryRunOperation",
            Error::UnauthorizedOperation => "UnauthorizedOperation",
            Error::OperationNotPermitted(_) => "OperationNotPermitted",
            Error::IncorrectState(_) => "IncorrectState",
            Error::IdempotentParameterMismatch(_) => "IdempotentParameterMismatch",
            Error::InvalidAmiIdMalformed(_) => "InvalidAMIID.Malformed",
            Error::InvalidAmiIdNotFound(_) => "InvalidAMIID.NotFound",
            Error::InvalidAmiIdUnavailable(_) => "InvalidAMIID.Unavailable",
            Error::InvalidAmiNameDuplicate(_, _) => "InvalidAMIName.Duplicate",
            Error::InvalidAmiNameMalformed(_) => "InvalidAMIName.Malformed",
            Error::InvalidAmiAttributeItemValue(_) => "InvalidAMIAttributeItemValue",
            Error::InvalidSnapshotIdMalformed(_) => "InvalidSnapshotID.Malformed",
            Error::InvalidSnapshotNotFound(_) => "InvalidSnapshot.NotFound",
            Error::InvalidSnapshotInUse(_, _) => "InvalidSnapshot.InUse",
            Error::InvalidVolumeIdMalformed(_) => "InvalidVolumeID.Malformed",
            Error::InvalidVolumeNotFound(_) => "InvalidVolume.NotFound",
            Error::VolumeInUse(_, _) => "VolumeInUse",
            Error::InvalidAvailabilityZone(_) => "InvalidParameterValue",
            Error::InvalidInstanceIdMalformed(_) => "InvalidInstanceID.Malformed",
            Error::InvalidInstanceIdNotFound(_) => "InvalidInstanceID.NotFound",
            Error::IncorrectInstanceState(_) => "IncorrectInstanceState",
            Error::InvalidVolumeZoneMismatch(_) => "InvalidVolume.ZoneMismatch",
            Error::InvalidAkiIdNotFound(_) => "InvalidAKIID.NotFound",
            Error::InvalidInstanceType(_) => "InvalidInstanceType",
            Error::IncorrectModificationState(_) => "IncorrectModificationState",
            Error::InvalidVolumeModificationNotFound(_) => "InvalidVolumeModification.NotFound",
            Error::InvalidBlockDeviceMapping(_) => "InvalidBlockDeviceMapping",
            Error::InvalidId(_) => "InvalidID",
            Error::TagLimitExceeded(_) => "TagLimitExceeded",
            Error::EbsValidation { .. } => "ValidationException",
            Error::EbsResourceNotFound(_) => "ResourceNotFoundException",
            Error::EbsConflict(_) => "ConflictException",
            Error::InternalError(_) => "InternalError",
        }
    }

    /// The HTTP status that goes with the code.
    pub fn http_status(&self) -> u16 {
        match self {
            Error::AuthFailure(_) | Error::MissingAuthenticationToken => 401,
            Error::SignatureDoesNotMatch | Error::UnauthorizedOperation => 403,
            Error::IncompleteSignature(_) => 403,
            Error::DryRunOperation => 412,
            Error::EbsResourceNotFound(_) => 404,
            Error::EbsConflict(_) => 409,
            Error::InternalError(_) => 500,
            _ => 400,
        }
    }

    /// True for errors that mean "the caller may not do this" (turned into
    /// `UnauthorizedOperation` for DryRun requests).
    pub fn is_permission_denied(&self) -> bool {
        matches!(self, Error::AuthFailure(_))
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::InternalError(format!("metadata store: {e}"))
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::InternalError(format!("metadata record: {e}"))
    }
}

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_dry_run_is_412() {
        assert_eq!(Error::DryRunOperation.http_status(), 412);
        assert_eq!(Error::DryRunOperation.code(), "DryRunOperation");
    }

    #[test]
    fn code_ami_not_found_uses_dotted_aws_code() {
        let e = Error::InvalidAmiIdNotFound("ami-0123".into());
        assert_eq!(e.code(), "InvalidAMIID.NotFound");
        assert!(e.to_string().contains("ami-0123"));
    }
}
