DROP INDEX messages_log_sender;
DROP INDEX messages_log_provider;
DROP INDEX messages_log_status;
DROP INDEX messages_log_origin;
