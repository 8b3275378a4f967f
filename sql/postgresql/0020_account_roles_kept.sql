-- A tenant's binding outlives nothing that would widen it (found by a hostile tenant).
--
-- 1. An account with a login role bound to it cannot be deleted (RESTRICT, was
--    CASCADE): the binding went with the account, and the role, no longer bound,
--    fell under the rule for operators' sessions, which see every account's rows.
--    Remove the binding first (as the schema's owner), then the account.
--
-- 2. A role sees its own binding only. account_roles was readable by every role,
--    so a tenant could list the other tenants' login roles and account ids. The
--    policies of 0010 and 0019 read only the session's own row, which it still sees;
--    the schema's owner, who writes the bindings, is not subject to the table's row
--    security (it is not forced).

ALTER TABLE account_roles
    DROP CONSTRAINT account_roles_account_id_fkey,
    ADD CONSTRAINT account_roles_account_id_fkey FOREIGN KEY (account_id)
        REFERENCES accounts (id) ON DELETE RESTRICT;

ALTER TABLE account_roles ENABLE ROW LEVEL SECURITY;

CREATE POLICY account_roles_own ON account_roles FOR SELECT
    USING (role_name = session_user);
