import functions_framework


@functions_framework.cloud_event
def sweeper(cloud_event):
    print("sweeper", cloud_event["id"])
