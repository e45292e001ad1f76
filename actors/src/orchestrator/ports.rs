//! The orchestrator's handle in the ports the organs above it ask through: the Motivator's [`GoalRunner`],
//! the exam's [`ExamTasks`], a life's [`LifeTasks`] and the codex's [`TaskResumer`] (each organ names only its port; boot hands it this
//! handle), and the orchestrator's error as a [`PortError`].

use async_trait::async_trait;

use super::{OrchError, OrchestratorHandle};
use crate::ports::{
    ExamOrigin, ExamTasks, GoalOrigin, GoalRunner, LifeTasks, PortError, TaskResumer, TaskState,
    TaskStatus,
};

/// The orchestrator's own error as a port's: not answering stays that, anything else is a refusal.
impl From<OrchError> for PortError {
    fn from(e: OrchError) -> Self {
        match e {
            OrchError::Unreachable(a) => PortError::Unreachable(a),
            other => PortError::Refused(other.to_string()),
        }
    }
}

#[async_trait]
impl ExamTasks for OrchestratorHandle {
    async fn submit(&self, text: String, origin: ExamOrigin) -> Result<String, PortError> {
        self.submit_exam(text, origin)
            .await
            .map(|s| s.id)
            .map_err(PortError::from)
    }

    async fn get(&self, id: String) -> Result<Option<TaskState>, PortError> {
        match OrchestratorHandle::get(self, id).await {
            Ok(t) => Ok(Some(*t)),
            Err(OrchError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn cancel(&self, id: String) -> Result<(), PortError> {
        match OrchestratorHandle::cancel(self, id).await {
            Ok(_) | Err(OrchError::Conflict(_)) | Err(OrchError::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[async_trait]
impl LifeTasks for OrchestratorHandle {
    async fn submit(&self, text: String, request_id: String) -> Result<String, PortError> {
        OrchestratorHandle::submit(self, text, Some(request_id))
            .await
            .map(|s| s.id)
            .map_err(PortError::from)
    }

    async fn get(&self, id: String) -> Result<Option<TaskState>, PortError> {
        match OrchestratorHandle::get(self, id).await {
            Ok(t) => Ok(Some(*t)),
            Err(OrchError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn cancel(&self, id: String) -> Result<(), PortError> {
        match OrchestratorHandle::cancel(self, id).await {
            Ok(_) | Err(OrchError::Conflict(_)) | Err(OrchError::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[async_trait]
impl GoalRunner for OrchestratorHandle {
    async fn start(
        &self,
        text: String,
        origin: GoalOrigin,
    ) -> Result<(String, TaskStatus), PortError> {
        let request_id = origin.goal.clone();
        self.submit_goal(text, request_id, origin)
            .await
            .map(|s| (s.id, s.status))
            .map_err(|e| match e {
                OrchError::Unreachable(a) => PortError::Unreachable(a),
                other => PortError::Refused(other.to_string()),
            })
    }

    async fn status(&self, task: String) -> Result<Option<TaskStatus>, PortError> {
        match self.get(task).await {
            Ok(t) => Ok(Some(t.status)),
            Err(OrchError::NotFound(_)) => Ok(None),
            Err(OrchError::Unreachable(a)) => Err(PortError::Unreachable(a)),
            Err(other) => Err(PortError::Refused(other.to_string())),
        }
    }
}

#[async_trait]
impl TaskResumer for OrchestratorHandle {
    async fn resume(
        &self,
        task: String,
        decision: String,
        guidance: Option<String>,
    ) -> Result<(), PortError> {
        OrchestratorHandle::resume(self, task, decision, guidance)
            .await
            .map(|_| ())
            .map_err(PortError::from)
    }
}
