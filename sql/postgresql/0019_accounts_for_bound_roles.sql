-- Accounts as a login role bound to one account (account_roles, 0010) sees them: its
-- own account only, and read-only. Before this, such a role could list every
-- tenant's name and rename accounts: renaming its own account to a name a report
-- query lists (`accounts = ["…"]`) would have handed it that query. Accounts are
-- made by operators (`accounts create`), whose sessions are not bound: they see and
-- write every account, whatever `schedctl.account_id` is set to. Foreign keys to
-- accounts are checked whatever the policies say.

ALTER TABLE accounts ENABLE ROW LEVEL SECURITY;
ALTER TABLE accounts FORCE ROW LEVEL SECURITY;

CREATE POLICY accounts_read ON accounts FOR SELECT
    USING (id = COALESCE((SELECT account_id FROM account_roles WHERE role_name = session_user), id));

CREATE POLICY accounts_insert ON accounts FOR INSERT
    WITH CHECK (NOT EXISTS (SELECT 1 FROM account_roles WHERE role_name = session_user));

CREATE POLICY accounts_update ON accounts FOR UPDATE
    USING (NOT EXISTS (SELECT 1 FROM account_roles WHERE role_name = session_user));

CREATE POLICY accounts_delete ON accounts FOR DELETE
    USING (NOT EXISTS (SELECT 1 FROM account_roles WHERE role_name = session_user));
