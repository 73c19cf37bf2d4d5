"""Django against ebb: `migrate` of Django's own apps (auth, admin,
contenttypes, sessions) and of a shop app with a foreign key, unique
fields, a CHECK (PositiveIntegerField), an index and a unique constraint;
then the ORM, and the database refusing what breaks a constraint.
Usage: run.py PORT. Prints "django ok" at the end."""
import os
import sys

os.environ["EBB_PORT"] = sys.argv[1]
os.environ["DJANGO_SETTINGS_MODULE"] = "settings"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import django  # noqa: E402

django.setup()

from django.contrib.auth.models import Permission, User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import IntegrityError, connection, transaction  # noqa: E402

from shop.models import Customer, Order  # noqa: E402

call_command("migrate", verbosity=0)
# Post-migrate filled the permissions with bulk_create (INSERT … SELECT * FROM UNNEST(arrays)).
assert Permission.objects.filter(codename="add_order").exists(), "permissions were created"

user = User.objects.create_user("ann", "ann@example.com", "secret")
assert User.objects.get(username="ann").check_password("secret")
customer = Customer.objects.create(email="a@x", name="Ann")
Order.objects.create(customer=customer, quantity=3, note="first")
Order.objects.create(customer=customer, quantity=1, note="second")
assert Order.objects.filter(customer__email="a@x").count() == 2

refusals = {
    "unique": lambda: Customer.objects.create(email="a@x", name="Dup"),
    "foreign key": lambda: Order.objects.create(customer_id=999, quantity=1),
    "check": lambda: Order.objects.create(customer=customer, quantity=-1, note="neg"),
    "unique together": lambda: Order.objects.create(customer=customer, quantity=1, note="first"),
}
for what, bad in refusals.items():
    try:
        with transaction.atomic():
            bad()
    except IntegrityError:
        continue
    sys.exit(f"a row breaking the {what} constraint was accepted")

# Django's keys are DEFERRABLE INITIALLY DEFERRED: an order may come before
# its customer within a transaction (as loaddata writes fixtures).
with transaction.atomic():
    Order.objects.create(customer_id=500, quantity=2, note="early")
    Customer.objects.create(id=500, email="late@x", name="Late")
assert Order.objects.get(note="early").customer.name == "Late"

# The database keeps a referenced customer (Django's PROTECT aside).
try:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM shop_customer WHERE id = %s", [customer.id])
    sys.exit("a referenced customer was deleted")
except IntegrityError:
    pass

assert list(Order.objects.order_by("id").values_list("note", "quantity")) == [("first", 3), ("second", 1), ("early", 2)]
print("django ok")
