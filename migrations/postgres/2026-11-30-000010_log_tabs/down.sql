DROP INDEX messages_log_origin;
