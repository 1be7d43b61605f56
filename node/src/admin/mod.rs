//! The admin API (`ferry.admin.v1.Admin`) as served by every node.

use ferry_proto::admin::v1::admin_server::Admin;
use ferry_proto::admin::v1::{GetVersionRequest, GetVersionResponse};
use tonic::{Request, Response, Status};

/// Answers admin calls on this node.
#[derive(Debug, Clone, Default)]
pub struct AdminService;

#[tonic::async_trait]
impl Admin for AdminService {
    async fn get_version(
        &self,
        _request: Request<GetVersionRequest>,
    ) -> Result<Response<GetVersionResponse>, Status> {
        Ok(Response::new(GetVersionResponse {
            version: crate::VERSION.to_owned(),
            api_version: ferry_proto::ADMIN_API_VERSION.to_owned(),
        }))
    }
}
