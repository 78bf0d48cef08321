"""Which RBD images of a pool a drift survey opens: at most its limit, changed ones first, a quarter kept
for the images checked longest ago."""
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
    assert budget.deferred == 4


def test_the_oldest_take_what_the_changed_leave():
    budget = OpenBudget(8)
    assert budget.take(names("c", 1), names("u", 20)) == names("c", 1) + names("u", 7)
    assert budget.deferred == 0


def test_without_unchanged_images_the_changed_take_it_all():
    budget = OpenBudget(8)
    assert budget.take(names("c", 10), []) == names("c", 8)
    assert budget.deferred == 2


def test_each_pool_has_the_whole_limit():
    budget = OpenBudget(8)
    assert budget.take(names("c", 10), names("u", 5)) == names("c", 6) + names("u", 2)
    assert budget.take(names("d", 3), names("v", 9)) == names("d", 3) + names("v", 5)
    assert budget.deferred == 4 and budget.coverage()["open_limit"] == 8
