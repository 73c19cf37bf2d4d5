from django.db import models

class Customer(models.Model):
    email = models.EmailField(unique=True)
    name = models.CharField(max_length=100, db_index=True)

class Order(models.Model):
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="orders")
    quantity = models.PositiveIntegerField()
    note = models.TextField(blank=True, default="")
    created = models.DateTimeField(auto_now_add=True)
    class Meta:
        indexes = [models.Index(fields=["customer", "created"])]
        constraints = [models.UniqueConstraint(fields=["customer", "note"], name="one_note_per_customer")]
