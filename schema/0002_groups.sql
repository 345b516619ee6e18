-- +goose Up

-- Backstops for the group handlers: a count can never go below zero (a bug in
-- the bookkeeping fails loudly instead of drifting), and the policy is one the
-- API knows (1 invite only, 2 open).
ALTER TABLE groups
    ADD CONSTRAINT groups_member_count_nonnegative CHECK (member_count >= 0),
    ADD CONSTRAINT groups_join_policy_known CHECK (join_policy IN (1, 2));

-- +goose Down
ALTER TABLE groups
    DROP CONSTRAINT groups_join_policy_known,
    DROP CONSTRAINT groups_member_count_nonnegative;
