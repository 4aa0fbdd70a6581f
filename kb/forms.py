"""Forms of the kb pages: collections, members, settings and tokens."""

from typing import Any

from django import forms

from kb.models import Collection, Role, TokenScope


class CollectionCreateForm(forms.Form):
    slug = forms.SlugField(max_length=63, help_text="Short name used in links and the API.")
    name = forms.CharField(max_length=200)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))


class CollectionSettingsForm(forms.ModelForm):  # type: ignore[type-arg]
    """An administrator also sees the retention settings (kb.services.RETENTION_SETTINGS)."""

    class Meta:
        model = Collection
        fields = ["name", "description", "system_prompt", "refusal_message"]
        fields += ["model_profile", "sensitive", "text_retention_days", "legal_hold"]
        widgets = {
            "description": forms.Textarea(attrs={"rows": 2}),
            "system_prompt": forms.Textarea(attrs={"rows": 4}),
            "refusal_message": forms.Textarea(attrs={"rows": 2}),
        }

    def __init__(self, *args: Any, admin: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not admin:
            del self.fields["text_retention_days"], self.fields["legal_hold"]


class MemberForm(forms.Form):
    kind = forms.ChoiceField(choices=[("user", "User"), ("group", "Group")])
    name = forms.CharField(max_length=150, label="User or group name")
    role = forms.TypedChoiceField(choices=Role.choices, coerce=int, initial=Role.READER)


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, required=False, help_text="What it is for.")
    collections = forms.MultipleChoiceField(widget=forms.CheckboxSelectMultiple)
    scope = forms.ChoiceField(choices=TokenScope.choices, initial=TokenScope.READ)
    expires_in_days = forms.IntegerField(
        min_value=1, max_value=3650, initial=90, required=False, label="Expires in (days)"
    )

    def __init__(self, *args: Any, choices: list[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["collections"]
        assert isinstance(field, forms.MultipleChoiceField)
        field.choices = choices
