//! The orchestrator's handle in the ports the organs above it ask through: the Motivator's [`GoalRunner`],
//! the exam's [`ExamTasks`], a life's [`LifeTasks`] and the codex's [`TaskResumer`] (each organ names only
//! its port; boot hands it this handle), and its failures as a [`PortError`].

use async_trait::async_trait;

use super::{OrchError, OrchestratorHandle};
use crate::ask::OrganError;
use crate::ports::{
    ExamOrigin, ExamTasks, GoalOrigin, GoalRunner, LifeTasks, PortError, TaskResumer, TaskState,
    TaskStatus,
};

/// What the ports share: a task read and a task stopped, as a port answers them.
impl OrchestratorHandle {
    /// A task as it stands; `None` when the orchestrator does not know it.
    async fn task(&self, id: String) -> Result<Option<TaskState>, PortError> {
        match OrchestratorHandle::get(self, id).await {
            Ok(t) => Ok(Some(*t)),
            Err(OrganError::Refused(OrchError::NotFound(_))) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Cancels a task that has not finished; one that has (or that the orchestrator does not know) is left
    /// as it is.
    async fn cancel_unfinished(&self, id: String) -> Result<(), PortError> {
        match OrchestratorHandle::cancel(self, id).await {
            Ok(_) | Err(OrganError::Refused(OrchError::Conflict(_) | OrchError::NotFound(_))) => {
                Ok(())
            }
            Err(e) => Err(e.into()),
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
        self.task(id).await
    }

    async fn cancel(&self, id: String) -> Result<(), PortError> {
        self.cancel_unfinished(id).await
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
        self.task(id).await
    }

    async fn cancel(&self, id: String) -> Result<(), PortError> {
        self.cancel_unfinished(id).await
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
            .map_err(PortError::from)
    }

    async fn status(&self, task: String) -> Result<Option<TaskStatus>, PortError> {
        Ok(self.task(task).await?.map(|t| t.status))
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
