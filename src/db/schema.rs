//! The one diesel schema shared by both backends (kept by hand: the migrations of
//! `migrations/sqlite` and `migrations/postgres` must both produce it).

diesel::table! {
    users (id) {
        id -> BigInt,
        email -> Text,
        name -> Text,
        password_hash -> Nullable<Text>,
        disabled_at -> Nullable<Timestamp>,
        password_changed_at -> Nullable<Timestamp>,
        sessions_revoked_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    workspaces (id) {
        id -> BigInt,
        name -> Text,
        slug -> Text,
        site_name -> Text,
        created_at -> Timestamp,
        per_request_smtp -> Bool,
    }
}

diesel::table! {
    memberships (id) {
        id -> BigInt,
        workspace_id -> BigInt,
        user_id -> BigInt,
        role -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    sessions (id) {
        id -> BigInt,
        public_id -> Text,
        key_hash -> Text,
        user_id -> Nullable<BigInt>,
        state -> Text,
        created_at -> Timestamp,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    password_tokens (id) {
        id -> BigInt,
        user_id -> BigInt,
        token_hash -> Text,
        purpose -> Text,
        created_by -> Nullable<BigInt>,
        created_at -> Timestamp,
        expires_at -> Timestamp,
        used_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    login_failures (id) {
        id -> BigInt,
        scope -> Text,
        subject -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    audit_log (id) {
        id -> BigInt,
        workspace_id -> Nullable<BigInt>,
        actor_user_id -> Nullable<BigInt>,
        actor_email -> Text,
        action -> Text,
        target -> Text,
        detail -> Text,
        ip -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    providers (id) {
        id -> BigInt,
        workspace_id -> BigInt,
        name -> Text,
        kind -> Text,
        host -> Text,
        port -> Integer,
        tls -> Text,
        region -> Nullable<Text>,
        username -> Text,
        secret -> Nullable<Text>,
        account_address -> Text,
        from_name -> Text,
        max_connections -> Integer,
        per_second -> Nullable<Integer>,
        per_minute -> Nullable<Integer>,
        per_hour -> Nullable<Integer>,
        receive_enabled -> Bool,
        imap_host -> Nullable<Text>,
        imap_port -> Nullable<Integer>,
        status -> Text,
        status_detail -> Text,
        checked_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        per_request -> Bool,
    }
}

diesel::table! {
    messages (id) {
        id -> BigInt,
        workspace_id -> BigInt,
        send_id -> BigInt,
        channel -> Text,
        direction -> Text,
        recipient_kind -> Text,
        origin -> Text,
        provider_id -> Nullable<BigInt>,
        from_address -> Text,
        recipient -> Text,
        contact_id -> Nullable<BigInt>,
        mailing_id -> Nullable<BigInt>,
        message_id -> Text,
        status -> Text,
        hold_reason -> Nullable<Text>,
        attempts -> Integer,
        max_attempts -> Integer,
        due_at -> Timestamp,
        send_at -> Nullable<Timestamp>,
        lease_owner -> Nullable<Text>,
        lease_until -> Nullable<Timestamp>,
        possible_duplicate -> Bool,
        result -> Text,
        smtp_code -> Nullable<Integer>,
        smtp_enhanced -> Nullable<Text>,
        created_at -> Timestamp,
        sent_at -> Nullable<Timestamp>,
        updated_at -> Timestamp,
        dkim_signature -> Nullable<Text>,
    }
}

diesel::table! {
    contacts (id) {
        id -> BigInt,
        workspace_id -> BigInt,
        created_at -> Timestamp,
    }
}

diesel::table! {
    senders (id) {
        id -> BigInt,
        workspace_id -> BigInt,
        name -> Text,
        address -> Text,
        provider_id -> Nullable<BigInt>,
        reply_to -> Text,
        validated_at -> Nullable<Timestamp>,
        code_hash -> Nullable<Text>,
        code_expires_at -> Nullable<Timestamp>,
        code_tries -> Integer,
        code_sent_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    domains (id) {
        id -> BigInt,
        workspace_id -> BigInt,
        name -> Text,
        token -> Text,
        active_selector -> Text,
        active_public -> Text,
        active_private -> Text,
        standby_selector -> Text,
        standby_public -> Text,
        standby_private -> Text,
        dmarc_rua -> Text,
        authenticated -> Bool,
        checks -> Text,
        checked_at -> Nullable<Timestamp>,
        failing_since -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    mailings (id) {
        id -> BigInt,
        workspace_id -> BigInt,
        created_at -> Timestamp,
    }
}

diesel::table! {
    message_tallies (workspace_id, day, origin, status) {
        workspace_id -> BigInt,
        day -> Date,
        origin -> Text,
        status -> Text,
        n -> BigInt,
        first_id -> BigInt,
        last_id -> BigInt,
    }
}

diesel::table! {
    /// A view: the tallies and the changes not folded into them yet.
    message_counts (workspace_id, day, origin, status) {
        workspace_id -> BigInt,
        day -> Date,
        origin -> Text,
        status -> Text,
        n -> BigInt,
        first_id -> BigInt,
        last_id -> BigInt,
    }
}

diesel::table! {
    message_tally_deltas (id) {
        id -> BigInt,
        workspace_id -> BigInt,
        day -> Date,
        origin -> Text,
        status -> Text,
        n -> BigInt,
        first_id -> BigInt,
        last_id -> BigInt,
    }
}

diesel::table! {
    api_keys (id) {
        id -> BigInt,
        workspace_id -> BigInt,
        name -> Text,
        scope -> Text,
        prefix -> Text,
        secret_hash -> Text,
        per_minute -> Nullable<Integer>,
        created_by -> Nullable<BigInt>,
        created_at -> Timestamp,
        last_used_at -> Nullable<Timestamp>,
        revoked_at -> Nullable<Timestamp>,
        default_sender_id -> Nullable<BigInt>,
    }
}

diesel::table! {
    api_files (id) {
        id -> BigInt,
        workspace_id -> BigInt,
        file_name -> Text,
        content_type -> Text,
        size -> BigInt,
        data -> Binary,
        created_at -> Timestamp,
    }
}

diesel::table! {
    idempotency_keys (id) {
        id -> BigInt,
        api_key_id -> BigInt,
        idempotency_key -> Text,
        request_hash -> Text,
        status_code -> Nullable<Integer>,
        response -> Nullable<Text>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    sends (id) {
        id -> BigInt,
        workspace_id -> BigInt,
        text_body -> Text,
        html_body -> Nullable<Text>,
        attachments -> Integer,
        created_at -> Timestamp,
        purged_at -> Nullable<Timestamp>,
        user_id -> Nullable<BigInt>,
        session_public_id -> Nullable<Text>,
        api_key_id -> Nullable<BigInt>,
        from_address -> Text,
        from_name -> Text,
        reply_to -> Text,
        to_addresses -> Text,
        cc -> Text,
        bcc -> Text,
        subject -> Text,
        references_header -> Nullable<Text>,
        contact_ids -> Nullable<Text>,
        mailing_id -> Nullable<BigInt>,
        sender_id -> Nullable<BigInt>,
    }
}

diesel::table! {
    message_attachments (id) {
        id -> BigInt,
        send_id -> BigInt,
        file_name -> Text,
        content_type -> Text,
        size -> BigInt,
        data -> Binary,
    }
}

diesel::table! {
    message_events (id) {
        id -> BigInt,
        message_id -> BigInt,
        kind -> Text,
        attempt -> Integer,
        smtp_code -> Nullable<Integer>,
        smtp_enhanced -> Nullable<Text>,
        detail -> Text,
        created_at -> Timestamp,
    }
}

diesel::joinable!(memberships -> users (user_id));
diesel::joinable!(message_events -> messages (message_id));
diesel::joinable!(messages -> sends (send_id));
diesel::joinable!(providers -> workspaces (workspace_id));
diesel::joinable!(senders -> providers (provider_id));
diesel::joinable!(api_keys -> workspaces (workspace_id));
diesel::joinable!(memberships -> workspaces (workspace_id));
diesel::joinable!(password_tokens -> users (user_id));

diesel::allow_tables_to_appear_in_same_query!(
    users,
    workspaces,
    memberships,
    sessions,
    password_tokens,
    login_failures,
    audit_log,
    providers,
    messages,
    message_tallies,
    sends,
    message_attachments,
    contacts,
    mailings,
    domains,
    senders,
    message_events,
    api_keys,
    api_files,
    idempotency_keys,
);
