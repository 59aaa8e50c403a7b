-- Invalidation across instances (PostgreSQL): every change that must end a cached credential
-- or permission on every gateway instance notifies the channel `zonegate_invalidate`, from the
-- database itself, so no code path can forget to. Each instance LISTENs and drops what it had
-- cached (`gateway/src/domain/invalidation.rs`). Notifications go out at commit, so a cache
-- miss after one reads the new state. Payloads are ids, never secrets:
--   key:<api key id>          revoked or rolled
--   session:<session public id>, family:<refresh family id>, user:<user id>
--   org:<org id>              suspended, reinstated, MFA requirement changed
--   member:<org id>/<user id> joined, role changed, removed, left
-- One small function per table: PL/pgSQL resolves every field a function names against the
-- row's table, so a shared function naming other tables' columns would fail (and with it the
-- write that fired it).
CREATE FUNCTION zonegate_invalidate_key() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('zonegate_invalidate', 'key:' || NEW.id);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE FUNCTION zonegate_invalidate_session() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('zonegate_invalidate', 'session:' || NEW.public_id);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE FUNCTION zonegate_invalidate_family() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('zonegate_invalidate', 'family:' || NEW.id);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE FUNCTION zonegate_invalidate_user() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('zonegate_invalidate', 'user:' || NEW.id);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE FUNCTION zonegate_invalidate_org() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('zonegate_invalidate', 'org:' || NEW.id);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE FUNCTION zonegate_invalidate_member() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('zonegate_invalidate', 'member:' || OLD.org_id || '/' || OLD.user_id);
    ELSE
        PERFORM pg_notify('zonegate_invalidate', 'member:' || NEW.org_id || '/' || NEW.user_id);
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER api_keys_invalidate AFTER UPDATE ON api_keys FOR EACH ROW
    WHEN (OLD.revoked_at IS DISTINCT FROM NEW.revoked_at
          OR OLD.secret_mac IS DISTINCT FROM NEW.secret_mac
          OR OLD.previous_valid_until IS DISTINCT FROM NEW.previous_valid_until)
    EXECUTE FUNCTION zonegate_invalidate_key();

CREATE TRIGGER sessions_invalidate AFTER UPDATE ON sessions FOR EACH ROW
    WHEN (OLD.revoked_at IS DISTINCT FROM NEW.revoked_at)
    EXECUTE FUNCTION zonegate_invalidate_session();

CREATE TRIGGER refresh_families_invalidate AFTER UPDATE ON refresh_families FOR EACH ROW
    WHEN (OLD.revoked_at IS DISTINCT FROM NEW.revoked_at)
    EXECUTE FUNCTION zonegate_invalidate_family();

CREATE TRIGGER users_invalidate AFTER UPDATE ON users FOR EACH ROW
    WHEN (OLD.disabled_at IS DISTINCT FROM NEW.disabled_at
          OR OLD.email_verified_at IS DISTINCT FROM NEW.email_verified_at)
    EXECUTE FUNCTION zonegate_invalidate_user();

CREATE TRIGGER orgs_invalidate AFTER UPDATE ON orgs FOR EACH ROW
    WHEN (OLD.suspended_at IS DISTINCT FROM NEW.suspended_at
          OR OLD.require_mfa IS DISTINCT FROM NEW.require_mfa)
    EXECUTE FUNCTION zonegate_invalidate_org();

CREATE TRIGGER memberships_invalidate AFTER INSERT OR UPDATE OR DELETE ON memberships
    FOR EACH ROW EXECUTE FUNCTION zonegate_invalidate_member();
