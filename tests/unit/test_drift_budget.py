"""Which RBD images a drift survey opens: at most its limit, changed ones first, a quarter kept for the
images checked longest ago."""
from robin.audit.image_checks import OpenBudget


def names(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{index}" for index in range(count)]


def test_a_full_survey_opens_everything():
    budget = OpenBudget(None)
    assert budget.take(names("c", 3), names("u", 5)) == names("c", 3) + names("u", 5)
    assert budget.deferred == 0


def test_changed_images_first_and_a_quarter_for_the_oldest():
    budget = OpenBudget(8)
    assert budget.take(names("c", 10), names("u", 20)) == names("c", 6) + names("u", 2)
    assert (budget.left, budget.deferred) == (0, 4)


def test_the_oldest_take_what_the_changed_leave():
    budget = OpenBudget(8)
    assert budget.take(names("c", 1), names("u", 20)) == names("c", 1) + names("u", 7)
    assert budget.take(names("c", 1), names("u", 20)) == []  # the next pool: nothing left
    assert budget.deferred == 1


def test_without_unchanged_images_the_changed_take_it_all():
    budget = OpenBudget(8)
    assert budget.take(names("c", 10), []) == names("c", 8)
    assert budget.deferred == 2


def test_the_limit_is_shared_by_the_pools():
    budget = OpenBudget(8)
    assert budget.take([], names("u", 5)) == names("u", 5)
    assert budget.take(names("c", 4), names("v", 4)) == names("c", 3)  # 3 left: 0 reserved of 3 // 4
    assert budget.coverage()["open_limit"] == 8 and budget.deferred == 1
