DROP TABLE audit_log;
DROP TABLE login_failures;
DROP TABLE password_tokens;
DROP TABLE sessions;
DROP TABLE memberships;
DROP TABLE workspaces;
DROP TABLE users;
